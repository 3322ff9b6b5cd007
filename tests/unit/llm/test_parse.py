"""Parsing model answers: json_repair for the wrapping, a strict schema for the content, typed failures."""

from __future__ import annotations

import json

import pytest

from libs.common.llm.parse import (
    MAX_REASONING_CHARS,
    Estimate,
    FailureReason,
    Forecast,
    ParseFailure,
    parse_answer,
    response_format,
)

GOOD = {"probability": 0.62, "confidence": 0.7, "action": "buy_yes", "reasoning": "Warm front arrives early."}
GOOD_JSON = json.dumps(GOOD)


def ok(text: str | None, **kw: object) -> Forecast:
    got = parse_answer(text, **kw)  # type: ignore[arg-type]
    assert isinstance(got, Forecast), got
    return got


def failed(text: str | None, schema: type = Forecast, **kw: object) -> ParseFailure:
    got = parse_answer(text, schema, **kw)  # type: ignore[arg-type]
    assert isinstance(got, ParseFailure), got
    return got


def test_bare_json_parses_into_the_strict_schema() -> None:
    f = ok(GOOD_JSON)
    assert (f.probability, f.confidence, f.action, f.reasoning) == (0.62, 0.7, "buy_yes", "Warm front arrives early.")


@pytest.mark.parametrize("text", [
    f"Sure. My forecast is {GOOD_JSON} based on the latest runs.",
    f"Here you go:\n```json\n{json.dumps(GOOD, indent=2)}\n```\nHope that helps.",
    f"```\n{GOOD_JSON}\n```",
    GOOD_JSON[:-1] + ",}",  # trailing comma
    "{'probability': 0.62, 'confidence': 0.7, 'action': 'buy_yes', 'reasoning': 'Warm front arrives early.'}",
    '{"probability": 0.62, // the number\n "confidence": 0.7, "action": "buy_yes", '
    '"reasoning": "Warm front arrives early."}',
    f"<think>maybe {{\"probability\": 0.1}}?</think>\n{GOOD_JSON}",
])
def test_wrapped_or_sloppy_json_is_repaired(text: str) -> None:
    f = ok(text)
    assert f.probability == 0.62 and f.action == "buy_yes" and f.reasoning == "Warm front arrives early."


def test_the_last_object_that_fits_wins() -> None:
    example = '{"probability": 0.1, "confidence": 0.1, "action": "hold", "reasoning": "example"}'
    assert ok(f"Format: {example}. My answer: {GOOD_JSON}").probability == 0.62
    # A later object that does not fit does not hide an earlier one that does.
    assert ok(f'{GOOD_JSON} and the sources: {{"url": "https://example.org"}}').probability == 0.62


def test_an_unterminated_think_block_is_dropped() -> None:
    assert failed('<think>{"probability": 0.2, "confidence": 0.5, "action": "hold", "reasoning": "x"}').kind \
        is FailureReason.NO_JSON


def test_refusal_wins_over_any_text() -> None:
    f = failed(GOOD_JSON, refusal="I can't help with that.")
    assert f.kind is FailureReason.REFUSAL and f.reason == "refusal" and f.detail == "I can't help with that."
    assert failed(None, refusal="No.").reason == "refusal"
    assert failed(GOOD_JSON, finish_reason="content_filter").reason == "refusal"


@pytest.mark.parametrize("text", [None, "", "   \n\t "])
def test_empty_answers(text: str | None) -> None:
    assert failed(text).reason == "empty"


def test_a_length_stop_is_never_trusted_even_when_it_parses() -> None:
    cut = '{"probability": 0.7, "confidence": 0.6, "action": "buy_yes", "reasoning": "warm fr'
    assert isinstance(parse_answer(cut), Forecast)  # json_repair closes the string...
    f = failed(cut, finish_reason="length")  # ...but a cut answer may have cut a number too
    assert f.kind is FailureReason.TRUNCATED and f.reason == "truncated"
    assert failed(GOOD_JSON, finish_reason="length").reason == "truncated"


def test_truncated_json_without_the_flag_fails_on_the_missing_field() -> None:
    assert failed('{"probability": 0.7, "confiden').reason == "invalid_schema: confidence"


@pytest.mark.parametrize("text", ["I think it's about 70%.", "Probability: 0.7", "42", "true", "[1, 2, 3]",
                                  '"just a string"'])
def test_no_json_object(text: str) -> None:
    f = failed(text)
    assert f.kind is FailureReason.NO_JSON and f.reason == "no_json"


@pytest.mark.parametrize(("change", "field"), [
    ({"probability": 70}, "probability"),  # a percentage, not a probability
    ({"probability": -0.1}, "probability"),
    ({"probability": "0.62"}, "probability"),  # strings are not coerced
    ({"probability": True}, "probability"),
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": None}, "confidence"),
    ({"action": "BUY_YES"}, "action"),
    ({"action": "sell"}, "action"),
    ({"reasoning": "   "}, "reasoning"),
    ({"reasoning": "x" * (MAX_REASONING_CHARS + 1)}, "reasoning"),
    ({"reasoning": 12}, "reasoning"),
    ({"ticker": "KXHIGHNY"}, "ticker"),  # extra="forbid"
])
def test_schema_violations_name_the_field(change: dict[str, object], field: str) -> None:
    f = failed(json.dumps({**GOOD, **change}))
    assert f.kind is FailureReason.INVALID_SCHEMA and f.field == field and f.reason == f"invalid_schema: {field}"
    assert f.detail  # pydantic's message, for the log


def test_missing_field_and_nan() -> None:
    assert failed('{"probability": 0.5, "confidence": 0.5, "action": "hold"}').reason == "invalid_schema: reasoning"
    assert failed('{"probability": NaN, "confidence": 0.5, "action": "hold", "reasoning": "x"}').reason \
        == "invalid_schema: probability"


def test_malformed_json_that_repair_cannot_save() -> None:
    f = failed('{"probability": "likely", "confidence": "high", "action": "buy yes", "reasoning": }')
    assert f.reason == "invalid_schema: probability"


def test_reasoning_is_stripped_and_ints_are_numbers() -> None:
    f = ok('{"probability": 1, "confidence": 0, "action": "hold", "reasoning": "  sure thing \\n"}')
    assert (f.probability, f.confidence, f.reasoning) == (1.0, 0.0, "sure thing")


def test_estimate_schema_for_forecaster_and_critic() -> None:
    e = parse_answer('Critic: {"probability": 0.4, "reasoning": "The forecaster ignored the sea breeze."}',
                     Estimate)
    assert isinstance(e, Estimate) and e.probability == 0.4
    assert failed(GOOD_JSON, Estimate).reason == "invalid_schema: confidence"  # extra fields are refused
    assert failed('{"probability": 0.4}', Estimate).reason == "invalid_schema: reasoning"


def test_failure_detail_is_bounded() -> None:
    assert len(failed("no json here " * 100).detail) <= 200


def test_response_format_is_a_strict_json_schema() -> None:
    rf = response_format(Forecast)
    assert rf["type"] == "json_schema"
    spec = rf["json_schema"]
    assert spec["name"] == "forecast" and spec["strict"] is True and spec["description"]
    schema = spec["schema"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"probability", "confidence", "action", "reasoning"}
    assert schema["properties"]["action"]["enum"] == ["buy_yes", "buy_no", "hold"]
    assert schema["properties"]["probability"]["minimum"] == 0 and schema["properties"]["probability"]["maximum"] == 1
    assert "maxLength" not in json.dumps(schema) and "minLength" not in json.dumps(schema)
    assert response_format(Estimate, "critic")["json_schema"]["name"] == "critic"
    with pytest.raises(ValueError):
        response_format(Forecast, "no spaces allowed")


def test_response_format_keeps_a_property_named_like_a_keyword() -> None:
    from pydantic import BaseModel, ConfigDict, Field

    class Odd(BaseModel):
        model_config = ConfigDict(extra="forbid")
        maxLength: int
        note: str = Field(max_length=5)

    props = response_format(Odd)["json_schema"]["schema"]["properties"]
    assert set(props) == {"maxLength", "note"} and "maxLength" not in props["note"]
