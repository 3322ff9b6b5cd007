"""The LLM client (the real `openai` SDK) against the fake OpenAI-compatible server over loopback."""

from __future__ import annotations

import json
import logging
import math
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import openai
import pytest
import structlog

from libs.common.llm import Forecast, LlmClient, LlmError, LlmErrorReason, PriceTable, UnknownModelPriceError
from libs.common.llm.client import retry_after_s
from libs.common.llm.parse import FailureReason
from services.sim.llm import REFUSAL, SIM_LLM_KEY, FakeLlm, Reply

TICKER = "KXHIGHNY-26NOV02-B60.5"
TRUTH = 0.30
SYSTEM = "You forecast prediction markets. Answer in JSON with probability, confidence, action and reasoning."


def ask(ticker: str = TICKER, price: str = "0.45") -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Market: {ticker}\nYes price: {price}\nWill the high exceed 60.5°F?"}]


def fake_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """The fake's documented rule: ceil(chars / 4) per content, 4 per message, 3 for the reply."""
    return sum(math.ceil(len(m["content"]) / 4) for m in messages) + 4 * len(messages) + 3


def grok_43_cost(prompt: int, output: int) -> int:
    """$1.25 / $2.50 per million tokens (§B3) in $0.0001 ticks, rounded up."""
    return -(-(prompt * 12_500 + output * 25_000) // 1_000_000)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlm]:
    f = await FakeLlm(seed=7).start()
    f.set_truth(TICKER, TRUTH)
    try:
        yield f
    finally:
        await f.stop()


def make(fake: FakeLlm, api_key: str = SIM_LLM_KEY, **kw: Any) -> LlmClient:
    opts: dict[str, Any] = {"base_url": fake.url, "backoff_base_s": 0.01, "backoff_cap_s": 0.05,
                            "rng": random.Random(3), "timeout_s": 10.0}
    opts.update(kw)
    return LlmClient(api_key, **opts)


# -- happy path -----------------------------------------------------------------------------------------------


async def test_structured_forecast_with_usage_and_cost(fake: FakeLlm) -> None:
    async with make(fake, structured_output=True) as client:
        result = await client.complete(ask(), schema=Forecast)
    forecast = result.parse()
    assert isinstance(forecast, Forecast)
    assert abs(forecast.probability - TRUTH) < 0.08 and forecast.action == "buy_no"  # well below the 0.45 price
    assert forecast.reasoning and 0 <= forecast.confidence <= 1
    assert (result.model, result.served_model, result.used_fallback) == ("grok-4", "grok-4.3", False)
    assert result.attempts == 1 and result.finish_reason == "stop" and result.refusal is None
    assert result.response_id.startswith("chatcmpl-")
    assert result.prompt_tokens == fake_prompt_tokens(ask())
    assert result.completion_tokens == math.ceil(len(result.text) / 4)
    assert result.billed_output_tokens == result.completion_tokens and result.reasoning_tokens == 0
    assert result.cost_ticks == grok_43_cost(result.prompt_tokens, result.completion_tokens) > 0
    assert result.latency_ms >= 0 and not result.usage_estimated
    [req] = fake.chat_requests
    assert req.auth_ok and req.status == 200 and req.model == "grok-4" and req.market == TICKER
    assert req.headers["x-stainless-retry-count"] == "0"
    rf = req.body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["name"] == "forecast"
    assert rf["json_schema"]["schema"]["required"] == ["probability", "confidence", "action", "reasoning"]


async def test_no_response_format_unless_the_provider_supports_it(fake: FakeLlm) -> None:
    async with make(fake, temperature=0.7, max_completion_tokens=400) as client:
        result = await client.complete(ask(price="0.20"), schema=Forecast, seed=11)
    assert isinstance(f := result.parse(), Forecast) and f.action == "buy_yes"
    body = fake.chat_requests[0].body
    assert "response_format" not in body
    assert (body["temperature"], body["max_completion_tokens"], body["seed"]) == (0.7, 400, 11)


@pytest.mark.parametrize("in_completion", [False, True])
async def test_reasoning_tokens_are_billed_both_ways(in_completion: bool) -> None:
    # xAI reports reasoning outside completion_tokens (but inside the total); OpenAI inside. Same bill.
    fake = await FakeLlm(reasoning_tokens=400_000, reasoning_in_completion=in_completion).start()
    try:
        async with make(fake) as client:
            result = await client.complete(ask())
    finally:
        await fake.stop()
    visible = math.ceil(len(result.text) / 4)
    assert result.reasoning_tokens == 400_000
    assert result.completion_tokens == (visible + 400_000 if in_completion else visible)
    assert result.billed_output_tokens == visible + 400_000
    assert result.cost_ticks == grok_43_cost(result.prompt_tokens, visible + 400_000) > 10_000


async def test_oracle_is_seeded_and_neutral_without_a_truth(fake: FakeLlm) -> None:
    async with make(fake) as client:
        first = [(await client.complete(ask())).parse() for _ in range(3)]
        unknown = (await client.complete(ask(ticker="KXUNKNOWN-1"))).parse()
    assert all(isinstance(f, Forecast) for f in first) and isinstance(unknown, Forecast)
    again = FakeLlm(seed=7)
    again.set_truth(TICKER, TRUTH)
    got = [f.probability for f in first if isinstance(f, Forecast)]
    assert got == [again.oracle_answer(TICKER, 0.45, draw=i)["probability"] for i in range(3)]
    assert len(set(got)) > 1  # noise, not a constant
    assert (unknown.probability, unknown.action) == (0.5, "hold")


async def test_a_reply_without_usage_is_estimated_never_free(fake: FakeLlm) -> None:
    fake.push(Reply.no_usage())
    async with make(fake) as client:
        result = await client.complete(ask())
    assert result.usage_estimated and isinstance(result.parse(), Forecast)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0 and result.cost_ticks >= 1


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 11, 2, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # the finer header wins
    assert retry_after_s({"retry-after": "2"}) == 2.0 and retry_after_s({"retry-after": "1.5"}) == 1.5
    assert retry_after_s({"retry-after": "Mon, 02 Nov 2026 12:00:30 GMT"}, now=now) == 30.0
    assert retry_after_s({"retry-after": "Mon, 02 Nov 2026 11:00:00 GMT"}, now=now) == 0.0
    for bad in ({}, {"retry-after": "soon"}, {"retry-after": "-3"}, {"retry-after": "nan"},
                {"retry-after-ms": "x"}):
        assert retry_after_s(bad) is None, bad


# -- answers that need repair or cannot be used ----------------------------------------------------------------


@pytest.mark.parametrize("reply", [Reply.prose(), Reply.fenced()], ids=["prose", "fenced"])
async def test_wrapped_json_is_repaired(fake: FakeLlm, reply: Reply) -> None:
    fake.push(reply)
    async with make(fake) as client:
        result = await client.complete(ask())
    assert not result.text.startswith("{")
    forecast = result.parse()
    assert isinstance(forecast, Forecast) and abs(forecast.probability - TRUTH) < 0.08


async def test_truncated_answer_is_a_typed_failure(fake: FakeLlm) -> None:
    fake.push(Reply.truncated())
    async with make(fake) as client:
        scripted = await client.complete(ask())
        capped = await client.complete(ask(), max_completion_tokens=5)
    for result in (scripted, capped):
        assert result.finish_reason == "length"
        failure = result.parse()
        assert not isinstance(failure, Forecast) and failure.kind is FailureReason.TRUNCATED
    assert len(capped.text) == 20 and capped.completion_tokens == 5  # the fake cut at 5 tokens of 4 characters
    assert fake.chat_requests[1].body["max_completion_tokens"] == 5


@pytest.mark.parametrize(("reply", "reason"), [(Reply.malformed(), "invalid_schema: probability"),
                                               (Reply.no_json(), "no_json"),
                                               (Reply.text(""), "empty")])
async def test_unusable_answers_are_typed_failures(fake: FakeLlm, reply: Reply, reason: str) -> None:
    fake.push(reply)
    async with make(fake) as client:
        result = await client.complete(ask())
    failure = result.parse()
    assert not isinstance(failure, Forecast) and failure.reason == reason
    assert result.cost_ticks > 0  # an unusable answer still costs money


async def test_refusal(fake: FakeLlm) -> None:
    fake.push(Reply.refusal())
    async with make(fake) as client:
        result = await client.complete(ask())
    assert result.refusal == REFUSAL and result.text == "" and result.finish_reason == "stop"
    failure = result.parse()
    assert not isinstance(failure, Forecast) and failure.reason == "refusal" and failure.detail == REFUSAL


# -- timeouts, rate limits, server errors ------------------------------------------------------------------------


async def test_slow_answer_hits_the_client_timeout(fake: FakeLlm) -> None:
    fake.override(Reply.slow(5.0))
    async with make(fake, timeout_s=0.3, max_attempts=2) as client:
        with pytest.raises(LlmError) as e:
            await client.complete(ask())
    assert e.value.reason is LlmErrorReason.TIMEOUT and e.value.attempts == 2 and e.value.status is None
    assert len(fake.chat_requests) == 2


async def test_slow_answer_within_the_timeout(fake: FakeLlm) -> None:
    fake.push(Reply.slow(0.2))
    async with make(fake, timeout_s=5.0) as client:
        result = await client.complete(ask())
    assert isinstance(result.parse(), Forecast) and result.latency_ms >= 200 and result.attempts == 1


async def test_429_storm_backs_off_then_succeeds(fake: FakeLlm) -> None:
    fake.push(*[Reply.rate_limited(None)] * 3)
    async with make(fake, max_attempts=4) as client:
        result = await client.complete(ask())
    assert result.attempts == 4 and isinstance(result.parse(), Forecast)
    assert [r.status for r in fake.chat_requests] == [429, 429, 429, 200]
    # Our loop retries, not the SDK's: every request is the SDK's first try.
    assert {r.headers["x-stainless-retry-count"] for r in fake.chat_requests} == {"0"}
    gaps = [b.at - a.at for a, b in zip(fake.chat_requests, fake.chat_requests[1:], strict=False)]
    assert all(g >= 0.005 for g in gaps)  # at least half of the 0.01 s base back-off


async def test_429_storm_gives_up_as_rate_limited(fake: FakeLlm) -> None:
    fake.override(Reply.rate_limited(None))
    async with make(fake, max_attempts=3) as client:
        with pytest.raises(LlmError) as e:
            await client.complete(ask())
    assert (e.value.reason, e.value.status, e.value.attempts) == (LlmErrorReason.RATE_LIMITED, 429, 3)
    assert "Rate limit reached" in e.value.detail and "rate_limited" in str(e.value)
    assert len(fake.chat_requests) == 3


async def test_retry_after_is_honoured(fake: FakeLlm) -> None:
    fake.push(Reply.rate_limited(1))
    async with make(fake) as client:
        result = await client.complete(ask())
    first, second = fake.chat_requests
    assert result.attempts == 2 and second.at - first.at >= 0.99  # the back-off alone would wait < 0.05 s


async def test_retry_after_ms_beats_the_backoff(fake: FakeLlm) -> None:
    fake.push(Reply.rate_limited(None, retry_after_ms=150))
    async with make(fake, backoff_base_s=20.0, backoff_cap_s=20.0) as client:
        result = await client.complete(ask())
    first, second = fake.chat_requests
    assert result.attempts == 2 and 0.14 <= second.at - first.at < 10  # 150 ms, not the 10-20 s back-off


async def test_a_retry_after_longer_than_the_cap_ends_the_model_at_once(fake: FakeLlm) -> None:
    fake.push(Reply.rate_limited(120))
    async with make(fake, max_retry_after_s=30) as client:
        with pytest.raises(LlmError) as e:
            await client.complete(ask())
    assert e.value.reason is LlmErrorReason.RATE_LIMITED and e.value.attempts == 1


async def test_exhausted_quota_is_final_even_with_a_fallback(fake: FakeLlm) -> None:
    fake.push(Reply.rate_limited(None, quota=True))
    async with make(fake, fallback_model="grok-4.20") as client:
        with pytest.raises(LlmError) as e:
            await client.complete(ask())
    assert e.value.reason is LlmErrorReason.RATE_LIMITED and e.value.attempts == 1
    assert "quota" in e.value.detail and len(fake.chat_requests) == 1


@pytest.mark.parametrize(("reply", "status"), [(Reply.server_error(), 500), (Reply.overloaded(), 503)])
async def test_server_error_then_success(fake: FakeLlm, reply: Reply, status: int) -> None:
    fake.push(reply)
    async with make(fake) as client:
        result = await client.complete(ask())
    assert result.attempts == 2 and isinstance(result.parse(), Forecast)
    assert [r.status for r in fake.chat_requests] == [status, 200]


async def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = LlmClient(SIM_LLM_KEY, base_url=f"http://127.0.0.1:{port}/v1", backoff_base_s=0.01, max_attempts=2)
    async with client:
        with pytest.raises(LlmError) as e:
            await client.complete(ask())
    assert e.value.reason is LlmErrorReason.CONNECTION and e.value.attempts == 2
    assert f"127.0.0.1:{port}" in e.value.detail


async def test_bad_request_is_not_retried(fake: FakeLlm) -> None:
    async with make(fake, max_attempts=3) as client:
        with pytest.raises(LlmError) as e:
            await client.complete(ask(), max_completion_tokens=0)
    assert (e.value.reason, e.value.status, e.value.attempts) == (LlmErrorReason.BAD_REQUEST, 400, 1)
    assert "max_completion_tokens" in e.value.detail


# -- fallback ----------------------------------------------------------------------------------------------------


async def test_fallback_model_answers_when_the_primary_keeps_failing(fake: FakeLlm) -> None:
    fake.override(Reply.server_error(), model="grok-4")
    async with make(fake, fallback_model="grok-4.20", max_attempts=2) as client:
        result = await client.complete(ask())
    assert (result.model, result.served_model, result.used_fallback, result.attempts) == \
        ("grok-4.20", "grok-4.20", True, 3)
    assert [r.model for r in fake.chat_requests] == ["grok-4", "grok-4", "grok-4.20"]
    assert result.cost_ticks == grok_43_cost(result.prompt_tokens, result.completion_tokens)  # same rates as 4.3


async def test_fallback_after_an_unknown_model(fake: FakeLlm) -> None:
    prices = PriceTable.from_config("grok-9=5.00/25.00")
    async with make(fake, model="grok-9", fallback_model="gpt-4o-mini", prices=prices) as client:
        result = await client.complete(ask())
    assert [r.status for r in fake.chat_requests] == [404, 200]  # a 404 is not retried on the same model
    assert result.model == "gpt-4o-mini" and result.attempts == 2
    assert result.cost_ticks == -(-(result.prompt_tokens * 1_500 + result.completion_tokens * 6_000) // 1_000_000)


async def test_both_models_failing_reports_the_last_error(fake: FakeLlm) -> None:
    fake.override(Reply.overloaded())
    async with make(fake, fallback_model="grok-4.20", max_attempts=2, fallback_attempts=2) as client:
        with pytest.raises(LlmError) as e:
            await client.complete(ask())
    assert (e.value.reason, e.value.status, e.value.model, e.value.attempts) == \
        (LlmErrorReason.SERVER_ERROR, 503, "grok-4.20", 4)


# -- the API key never leaks --------------------------------------------------------------------------------------


async def test_a_wrong_key_fails_fast_and_never_shows_up(fake: FakeLlm, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-SUPERSECRET-9f8e7d6c5b4a"
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        client = make(fake, api_key=secret, fallback_model="grok-4.20")
        async with client:
            with pytest.raises(LlmError) as e:
                await client.complete(ask())
    assert e.value.reason is LlmErrorReason.AUTH and e.value.status == 401 and e.value.attempts == 1
    assert len(fake.chat_requests) == 1 and not fake.chat_requests[0].auth_ok  # no retry, no fallback
    # The fake echoes the key OpenAI-style ("sk-***…5b4a"); none of it may reach our text.
    texts = [str(e.value), repr(e.value), e.value.detail, repr(client), caplog.text, repr(events),
             repr(e.value.__cause__), repr(e.value.__context__)]
    assert events and caplog.records  # something was logged, so the check means something
    for text in texts:
        assert secret not in text and "9f8e7d6c5b4a" not in text and "5b4a" not in text


async def test_the_right_key_stays_out_of_logs_through_retries(fake: FakeLlm,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.push(Reply.rate_limited(None), Reply.server_error(), Reply.truncated())
    with structlog.testing.capture_logs() as events:
        async with make(fake) as client:
            result = await client.complete(ask())
            assert SIM_LLM_KEY not in repr(client) and SIM_LLM_KEY not in repr(vars(client))
    assert result.attempts == 3
    assert [ev["event"] for ev in events] == ["llm_attempt_failed", "llm_attempt_failed", "llm_call"]
    assert SIM_LLM_KEY not in repr(events) and SIM_LLM_KEY not in caplog.text and SIM_LLM_KEY not in repr(result)


def test_construction_checks() -> None:
    with pytest.raises(ValueError, match="API key is empty"):
        LlmClient("  ")
    with pytest.raises(UnknownModelPriceError, match="grok-9"):
        LlmClient(SIM_LLM_KEY, model="grok-9")
    with pytest.raises(UnknownModelPriceError, match="mystery"):
        LlmClient(SIM_LLM_KEY, fallback_model="mystery")


# -- the fake speaks the protocol ----------------------------------------------------------------------------------


async def test_fake_completion_object_has_every_documented_field(fake: FakeLlm) -> None:
    headers = {"Authorization": f"Bearer {SIM_LLM_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{fake.url}/chat/completions", json={"model": "grok-4.3", "messages": ask()}) as r:
            assert r.status == 200 and r.headers["x-request-id"].startswith("req_")
            body = await r.json()
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert body["object"] == "chat.completion" and isinstance(body["created"], int) and body["model"] == "grok-4.3"
    [choice] = body["choices"]
    assert set(choice) == {"index", "message", "finish_reason", "logprobs"} and choice["index"] == 0
    assert set(choice["message"]) >= {"role", "content", "refusal"} and choice["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"model": "grok-4.3", "messages": []}, 400, "messages", None),
    ({"model": "nope", "messages": ask()}, 404, None, "model_not_found"),
    ({"model": "grok-4.3", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role",
     "invalid_value"),
    ({"model": "grok-4.3", "messages": ask(), "temperature": 3}, 400, "temperature", "invalid_value"),
    ({"model": "grok-4.3", "messages": [{"role": "user", "content": "hi"}],
      "response_format": {"type": "json_object"}}, 400, "messages", None),
    ({"model": "grok-4.3", "messages": ask(), "response_format": {"type": "json_schema",
                                                                  "json_schema": {"name": "bad name"}}},
     400, "response_format.json_schema.name", "invalid_value"),
])
async def test_fake_rejects_bad_requests_in_openai_shape(fake: FakeLlm, body: dict[str, Any], status: int,
                                                         param: str | None, code: str | None) -> None:
    sdk = openai.AsyncOpenAI(api_key=SIM_LLM_KEY, base_url=fake.url, max_retries=0)
    try:
        with pytest.raises(openai.APIStatusError) as e:
            await sdk.chat.completions.create(**body)
    finally:
        await sdk.close()
    assert e.value.status_code == status and e.value.param == param and e.value.code == code
    assert e.value.type == "invalid_request_error" and e.value.message


async def test_fake_auth_models_and_unknown_urls(fake: FakeLlm) -> None:
    sdk = openai.AsyncOpenAI(api_key=SIM_LLM_KEY, base_url=fake.url, max_retries=0)
    wrong = openai.AsyncOpenAI(api_key="sk-wrong-0123456789", base_url=fake.url, max_retries=0)
    try:
        ids = [m.id async for m in sdk.models.list()]
        assert "grok-4.3" in ids and "grok-4" in ids
        assert (await sdk.models.retrieve("grok-4")).id == "grok-4"
        with pytest.raises(openai.AuthenticationError) as e:
            await wrong.chat.completions.create(model="grok-4.3", messages=ask())  # type: ignore[arg-type]
        assert e.value.code == "invalid_api_key" and "sk-" in e.value.message and "0123456789" not in e.value.message
        with pytest.raises(openai.NotFoundError) as nf:
            await sdk.get("/nowhere", cast_to=object)
        assert "Invalid URL (GET /v1/nowhere)" in nf.value.message
    finally:
        await sdk.close()
        await wrong.close()
    assert [r.auth_ok for r in fake.requests] == [True, True, False, True]


async def test_fake_json_schema_answer_has_exactly_the_schema_properties(fake: FakeLlm) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["probability", "note", "side"],
              "properties": {"probability": {"type": "number"}, "note": {"type": "string"},
                             "side": {"type": "string", "enum": ["yes", "no"]}}}
    sdk = openai.AsyncOpenAI(api_key=SIM_LLM_KEY, base_url=fake.url, max_retries=0)
    try:
        done = await sdk.chat.completions.create(
            model="grok-4.3", messages=ask(),  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "est", "schema": schema, "strict": True}})
    finally:
        await sdk.close()
    answer = json.loads(done.choices[0].message.content or "")
    assert set(answer) == {"probability", "note", "side"} and answer["side"] == "yes"
    assert abs(answer["probability"] - TRUTH) < 0.08
