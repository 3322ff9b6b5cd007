"""Turn a model's answer into a strict, validated object, or a typed failure saying why not.

Models wrap JSON in prose or code fences, add trailing commas, or stop mid-object; `json_repair` (§B4)
recovers those. What it recovers is then held to a strict pydantic schema (`extra="forbid"`, no
string-to-number coercion, finite numbers only), so a repaired-but-wrong answer is still refused.

Two rules on top of the repair, because a repair can be silently wrong:
- an answer cut by the token limit (`finish_reason == "length"`) is never used, even when it parses:
  `{"probability": 0.7` may be the first digits of 0.75;
- when several JSON objects appear, the last one that fits the schema wins (models restate the final
  answer after an example or a scratch attempt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeAlias, TypeVar

import json_repair
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_REASONING_CHARS = 4000
MAX_DETAIL_CHARS = 200
MAX_ANSWER_CHARS = 200_000  # far above any forecast answer; keeps a runaway reply from costing seconds of repair

Action: TypeAlias = Literal["buy_yes", "buy_no", "hold"]

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Keywords OpenAI's strict structured outputs reject for strings; the bounds are enforced after parsing anyway.
_UNSUPPORTED_KEYWORDS = frozenset({"minLength", "maxLength"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              str_strip_whitespace=True)


class Forecast(_Strict):
    """A trading forecast: probability of YES, how sure the model is, what it would do, and why."""

    probability: float = Field(ge=0.0, le=1.0, description="probability that the market resolves YES")
    confidence: float = Field(ge=0.0, le=1.0, description="how much weight the estimate deserves, 0 to 1")
    action: Action = Field(description="buy_yes, buy_no or hold")
    reasoning: str = Field(min_length=1, max_length=MAX_REASONING_CHARS, description="the argument, briefly")


class Estimate(_Strict):
    """A forecaster's or critic's answer: a probability of YES and the argument for it."""

    probability: float = Field(ge=0.0, le=1.0, description="probability that the market resolves YES")
    reasoning: str = Field(min_length=1, max_length=MAX_REASONING_CHARS, description="the argument, briefly")


class FailureReason(StrEnum):
    """Why an answer could not be used."""

    EMPTY = "empty"
    REFUSAL = "refusal"
    TRUNCATED = "truncated"
    NO_JSON = "no_json"
    INVALID_SCHEMA = "invalid_schema"


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A typed failure: `reason` is what gets logged and counted (`invalid_schema: probability`)."""

    kind: FailureReason
    field: str | None = None
    detail: str = ""

    @property
    def reason(self) -> str:
        """The short reason: the kind, with the offending field for schema failures."""
        return f"{self.kind.value}: {self.field}" if self.field else self.kind.value


T = TypeVar("T", bound=BaseModel)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def _schema_failure(err: ValidationError) -> ParseFailure:
    first = err.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return ParseFailure(FailureReason.INVALID_SCHEMA, where, _short(first["msg"]))


def _candidates(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def parse_answer(text: str | None, schema: type[T] = Forecast, *,  # type: ignore[assignment]
                 refusal: str | None = None, finish_reason: str | None = None) -> T | ParseFailure:
    """Parse one answer (`message.content`) into `schema`, or say why it cannot be used.

    `refusal` and `finish_reason` come from the same choice: a refusal or a content-filter stop wins over
    any text, and a length stop makes the answer unusable.
    """
    if refusal:
        return ParseFailure(FailureReason.REFUSAL, detail=_short(refusal))
    if finish_reason == "content_filter":
        return ParseFailure(FailureReason.REFUSAL, detail="content_filter")
    if text is None or not text.strip():
        return ParseFailure(FailureReason.EMPTY)
    if finish_reason == "length":
        return ParseFailure(FailureReason.TRUNCATED, detail="the answer hit the completion token limit")
    # Some OpenAI-compatible servers inline a reasoning model's scratchpad as <think>…</think> in the content.
    body = _THINK.sub(" ", text[:MAX_ANSWER_CHARS])
    try:
        value = json_repair.loads(body)
    except (ValueError, RecursionError):
        value = None
    found = _candidates(value)
    if not found:
        return ParseFailure(FailureReason.NO_JSON, detail=_short(text))
    last_error: ValidationError | None = None
    for candidate in reversed(found):
        try:
            return schema.model_validate(candidate)
        except ValidationError as e:
            last_error = last_error or e
    assert last_error is not None
    return _schema_failure(last_error)


def _drop_unsupported(node: Any, *, names: bool = False) -> Any:
    if isinstance(node, dict):
        # Under `properties` / `$defs` the keys are names, not keywords: a field may be called `maxLength`.
        return {k: _drop_unsupported(v, names=k in ("properties", "$defs") and not names)
                for k, v in node.items() if names or k not in _UNSUPPORTED_KEYWORDS}
    if isinstance(node, list):
        return [_drop_unsupported(v) for v in node]
    return node


def response_format(schema: type[BaseModel], name: str | None = None) -> dict[str, Any]:
    """The `response_format` asking a provider for `schema` as strict structured output (json_schema)."""
    name = name or schema.__name__.lower()
    if not _SCHEMA_NAME.match(name):
        raise ValueError(f"response_format name {name!r} must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'")
    json_schema: dict[str, Any] = {"name": name, "schema": _drop_unsupported(schema.model_json_schema()),
                                   "strict": True}
    if schema.__doc__:
        json_schema["description"] = " ".join(schema.__doc__.split())
    return {"type": "json_schema", "json_schema": json_schema}


__all__ = [
    "MAX_REASONING_CHARS",
    "Action",
    "Estimate",
    "FailureReason",
    "Forecast",
    "ParseFailure",
    "parse_answer",
    "response_format",
]
