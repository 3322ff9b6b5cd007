"""One async client for OpenAI-compatible chat completions (xAI Grok by default, OpenAI, local servers).

Built on the official `openai` SDK with its own retries switched off (`max_retries=0`): the SDK would retry
a 429 three times with its own waits (§B2) and hide how many attempts a forecast took and what it cost.
Here one loop decides: 429, 408, 409, 5xx, timeouts and connection errors are retried with exponential
back-off and jitter (the desk's `Backoff` rule), honouring `retry-after-ms` / `Retry-After`; when the primary
model keeps failing, the fallback model gets its own attempts. A wrong key (401/403) and an exhausted
quota or credit balance end the call at once: retrying those only burns the rate limit.

The API key is held as a `SecretStr` and scrubbed from every error detail; errors are raised `from None` so
the SDK's exception (which holds the request) never rides along into a log's traceback.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, SecretStr

from libs.common.backoff import Backoff
from libs.common.llm.parse import Forecast, ParseFailure, parse_answer, response_format
from libs.common.llm.prices import DEFAULT_TABLE, PriceTable
from libs.common.logs import get_logger, redact_text
from libs.common.money import Price

log = get_logger(__name__)

DEFAULT_BASE_URL = "https://api.x.ai/v1"
DEFAULT_MODEL = "grok-4"  # an alias of grok-4.3 since xAI's 2026-05-15 retirement (§B3)
# xAI advises >= 900 s for reasoning models; a forecast that slow is stale for trading, so we cap far lower.
DEFAULT_TIMEOUT_S = 120.0
MAX_DETAIL_CHARS = 200
_CHARS_PER_TOKEN = 4  # only for estimating usage when a provider omits it
# xAI answers an exhausted credit balance with a 429 whose message says so (§B3); OpenAI uses a code.
_QUOTA_CODES = frozenset({"insufficient_quota"})
_QUOTA_TEXT = re.compile(r"credits|spending limit|exceeded your current quota", re.I)

T = TypeVar("T", bound=BaseModel)


class LlmErrorReason(StrEnum):
    """Why a call failed after its retries."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"


class LlmError(Exception):
    """A chat completion that failed for good: `reason` is what to count and alert on."""

    def __init__(self, reason: LlmErrorReason, *, model: str, attempts: int, status: int | None = None,
                 detail: str = "") -> None:
        self.reason = reason
        self.model = model
        self.attempts = attempts
        self.status = status
        self.detail = detail
        http = f", HTTP {status}" if status is not None else ""
        super().__init__(f"LLM call failed: {reason.value} (model {model}, {attempts} attempt(s){http})"
                         + (f": {detail}" if detail else ""))


@dataclass(frozen=True, slots=True)
class LlmResult:
    """One answered chat completion, with what it cost.

    `model` is the model we asked for that answered (the primary or the fallback); `served_model` is what
    the provider says it ran (xAI echoes the resolved slug, OpenAI a dated snapshot). `completion_tokens` is
    as reported; `billed_output_tokens` adds reasoning tokens a provider reports outside it (xAI does,
    OpenAI counts them inside), and `cost_ticks` uses it. `latency_ms` spans every attempt and wait.
    """

    text: str
    model: str
    served_model: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    billed_output_tokens: int
    cost_ticks: Price
    latency_ms: int
    attempts: int
    finish_reason: str | None
    refusal: str | None
    response_id: str
    used_fallback: bool
    usage_estimated: bool = False

    def parse(self, schema: type[T] = Forecast) -> T | ParseFailure:  # type: ignore[assignment]
        """The answer parsed into `schema`, or the typed reason it cannot be used."""
        return parse_answer(self.text, schema, refusal=self.refusal, finish_reason=self.finish_reason)


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: LlmErrorReason
    status: int | None
    detail: str
    retryable: bool
    final: bool = False  # no other model can help either (same key, same account)
    retry_after_s: float | None = None


def retry_after_s(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds a response asks us to wait: `retry-after-ms`, else `Retry-After` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = (when - (now or datetime.now(UTC))).total_seconds()
        return max(0.0, value)
    return value if math.isfinite(value) and value >= 0 else None


class LlmClient:
    """Chat completions against one OpenAI-compatible base URL, with retries, a fallback model and costs."""

    def __init__(
        self,
        api_key: str | SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        fallback_model: str | None = None,
        structured_output: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = 5.0,
        max_attempts: int = 3,
        fallback_attempts: int = 2,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        temperature: float | None = None,
        max_completion_tokens: int | None = None,
        prices: PriceTable = DEFAULT_TABLE,
        rng: random.Random | None = None,
    ) -> None:
        """Check the settings and price both models up front, so a misconfiguration fails at start.

        `structured_output=True` sends `response_format` json_schema when a call names a schema; leave it off for
        providers that reject it and rely on the prompt plus `parse_answer`'s repair.
        """
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not isinstance(key, str) or not key.strip():
            raise ValueError("the LLM API key is empty: set it (e.g. XAI_API_KEY) or disable the LLM family")
        if max_attempts < 1 or fallback_attempts < 1:
            raise ValueError(f"max_attempts and fallback_attempts must be >= 1, "
                             f"got {max_attempts} and {fallback_attempts}")
        if not timeout_s > 0 or not connect_timeout_s > 0:
            raise ValueError(f"timeouts must be positive seconds, got {timeout_s}, {connect_timeout_s}")
        if fallback_model == model:
            fallback_model = None
        for m in (model, fallback_model):
            if m is not None:
                prices.price(m)  # UnknownModelPriceError names the setting to fix
        self._api_key = SecretStr(key)
        self.base_url = base_url
        self.model = model
        self.fallback_model = fallback_model
        self.structured_output = structured_output
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.fallback_attempts = fallback_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_retry_after_s = max_retry_after_s
        self.temperature = temperature
        self.max_completion_tokens = max_completion_tokens
        self.prices = prices
        self._rng = rng or random.Random()
        self._sdk = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, max_retries=0,
            timeout=openai.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
        )

    def __repr__(self) -> str:
        return f"LlmClient(base_url={self.base_url!r}, model={self.model!r}, fallback_model={self.fallback_model!r})"

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._sdk.close()

    async def __aenter__(self) -> LlmClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_completion_tokens: int | None = None,
        seed: int | None = None,
    ) -> LlmResult:
        """One chat completion: the primary model with retries, then the fallback; raises LlmError."""
        started = time.perf_counter()
        plan = [(self.model, self.max_attempts)]
        if self.fallback_model is not None:
            plan.append((self.fallback_model, self.fallback_attempts))
        attempts = 0
        failure: _Failure | None = None
        for index, (model, tries) in enumerate(plan):
            if index:
                log.info("llm_fallback", model=self.model, fallback=model, reason=failure.reason.value
                         if failure else None)
            backoff = Backoff(self.backoff_base_s, self.backoff_cap_s, rng=self._rng)
            request = self._request(model, messages, schema, temperature, max_completion_tokens, seed)
            for n in range(1, tries + 1):
                attempts += 1
                try:
                    response = await self._sdk.chat.completions.create(**request)
                except openai.OpenAIError as e:
                    failure = self._classify(e)
                else:
                    if response.choices:
                        return self._result(model, response, messages, started, attempts, used_fallback=index > 0)
                    failure = _Failure(LlmErrorReason.SERVER_ERROR, None, "the provider answered with no choices",
                                       retryable=True)
                log.warning("llm_attempt_failed", model=model, attempt=n, reason=failure.reason.value,
                            status=failure.status, detail=failure.detail)
                if failure.final:
                    raise self._error(failure, model, attempts)
                if not failure.retryable or n == tries:
                    break
                delay = backoff.next_delay()
                if failure.retry_after_s is not None:
                    if failure.retry_after_s > self.max_retry_after_s:
                        log.info("llm_retry_after_too_long", model=model, retry_after_s=failure.retry_after_s,
                                 max_retry_after_s=self.max_retry_after_s)
                        break
                    delay = failure.retry_after_s
                await asyncio.sleep(delay)
        assert failure is not None
        raise self._error(failure, plan[-1][0], attempts)

    # -- internals --------------------------------------------------------------------------------------------

    def _request(self, model: str, messages: Sequence[Mapping[str, Any]], schema: type[BaseModel] | None,
                 temperature: float | None, max_completion_tokens: int | None, seed: int | None) -> dict[str, Any]:
        request: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
        temperature = self.temperature if temperature is None else temperature
        if temperature is not None:
            request["temperature"] = temperature
        limit = self.max_completion_tokens if max_completion_tokens is None else max_completion_tokens
        if limit is not None:
            request["max_completion_tokens"] = limit  # the cap includes reasoning tokens (§B1)
        if seed is not None:
            request["seed"] = seed
        if schema is not None and self.structured_output:
            request["response_format"] = response_format(schema)
        return request

    def _scrub(self, text: str) -> str:
        key = self._api_key.get_secret_value()
        text = redact_text(text.replace(key, "***"))
        text = " ".join(text.split())
        return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"

    def _error(self, failure: _Failure, model: str, attempts: int) -> LlmError:
        return LlmError(failure.reason, model=model, attempts=attempts, status=failure.status, detail=failure.detail)

    def _classify(self, e: openai.OpenAIError) -> _Failure:
        R = LlmErrorReason
        # APITimeoutError is a subclass of APIConnectionError: test it first.
        if isinstance(e, openai.APITimeoutError):
            return _Failure(R.TIMEOUT, None, f"no answer within {self.timeout_s:g} s", retryable=True)
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__
            why = f"{type(cause).__name__}: {cause}" if cause else str(e)
            return _Failure(R.CONNECTION, None, self._scrub(f"cannot reach {self.base_url}: {why}"), retryable=True)
        if isinstance(e, openai.APIStatusError):
            status = e.status_code
            body = e.body if isinstance(e.body, Mapping) else {}
            message = self._scrub(str(body.get("message") or e.message))
            code = body.get("code")
            if status in (401, 403):
                # Providers echo (part of) a wrong key in the message; say nothing of it.
                return _Failure(R.AUTH, status, f"the provider at {self.base_url} refused the API key or its "
                                "permissions (check the key and that it belongs to this provider)",
                                retryable=False, final=True)
            wait = retry_after_s(e.response.headers)
            if status == 429:
                if code in _QUOTA_CODES or _QUOTA_TEXT.search(message):
                    return _Failure(R.RATE_LIMITED, status, f"quota or credits exhausted: {message}",
                                    retryable=False, final=True)
                return _Failure(R.RATE_LIMITED, status, message, retryable=True, retry_after_s=wait)
            if status == 408:
                return _Failure(R.TIMEOUT, status, message, retryable=True, retry_after_s=wait)
            if status == 409 or status >= 500:
                return _Failure(R.SERVER_ERROR, status, message, retryable=True, retry_after_s=wait)
            # 400/404/422: this request will not succeed on this model; the fallback may still accept it.
            return _Failure(R.BAD_REQUEST, status, message, retryable=False)
        # A 200 whose body the SDK could not read, or anything else from the SDK: the provider misbehaved.
        return _Failure(R.SERVER_ERROR, None, self._scrub(f"{type(e).__name__}: {e}"), retryable=True)

    def _result(self, model: str, response: Any, messages: Sequence[Mapping[str, Any]], started: float,
                attempts: int, *, used_fallback: bool) -> LlmResult:
        choice = response.choices[0]
        text = choice.message.content or ""
        refusal = getattr(choice.message, "refusal", None)
        usage = response.usage
        estimated = usage is None
        if usage is None:
            # Never count a call as free: estimate from characters, and say so.
            prompt = sum(len(str(m.get("content") or "")) for m in messages) // _CHARS_PER_TOKEN + 1
            completion = len(text or refusal or "") // _CHARS_PER_TOKEN + 1
            reasoning, total = 0, prompt + completion
            log.warning("llm_usage_missing", model=model, prompt_tokens=prompt, completion_tokens=completion)
        else:
            prompt, completion, total = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
            details = usage.completion_tokens_details
            reasoning = (details.reasoning_tokens or 0) if details is not None else 0
        # xAI bills reasoning tokens but leaves them out of completion_tokens (total = prompt + completion +
        # reasoning); OpenAI counts them inside. Billing max(completion, total - prompt) is right for both.
        billed_output = max(completion, (total or 0) - prompt)
        served = response.model or model
        priced_as = served if self.prices.knows(served) else model
        cost = self.prices.cost_ticks(priced_as, prompt, billed_output)
        latency_ms = round((time.perf_counter() - started) * 1000)
        log.info("llm_call", model=model, served_model=served, attempts=attempts, prompt_tokens=prompt,
                 completion_tokens=completion, reasoning_tokens=reasoning, cost_ticks=cost, latency_ms=latency_ms,
                 finish_reason=choice.finish_reason, refusal=bool(refusal), used_fallback=used_fallback)
        return LlmResult(text=text, model=model, served_model=served, prompt_tokens=prompt,
                         completion_tokens=completion, reasoning_tokens=reasoning, billed_output_tokens=billed_output,
                         cost_ticks=cost, latency_ms=latency_ms, attempts=attempts,
                         finish_reason=choice.finish_reason, refusal=refusal, response_id=response.id or "",
                         used_fallback=used_fallback, usage_estimated=estimated)


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "LlmClient",
    "LlmError",
    "LlmErrorReason",
    "LlmResult",
    "retry_after_s",
]
