"""Fake OpenAI-compatible LLM server: `POST /v1/chat/completions` and `GET /v1/models` as OpenAI and xAI serve them.

The desk's `LlmClient` (the real `openai` SDK) talks to it over a socket exactly as to api.x.ai, so what is
tested is the real stack: the SDK's request encoding, its error classes, headers, timeouts.
Faithful to ref/telegram_llm_forecast.md §B1–B3:

- Bearer auth, checked first: a missing or wrong key gets 401 with OpenAI's error body
  `{"error": {"message", "type", "param", "code"}}`; every error here uses that shape.
- The chat completion object carries every required field: `id`, `object: "chat.completion"`, `created`,
  `model`, `choices[{index, message{role, content, refusal, annotations}, finish_reason, logprobs}]`,
  `usage{prompt_tokens, completion_tokens, total_tokens, …details}`, `system_fingerprint`, `service_tier`.
- Requests are validated like OpenAI's (model, messages, roles, temperature, response_format); an unknown
  model is a 404 `model_not_found`; aliases answer with the resolved slug in `model`, as xAI does.
- `max_completion_tokens` (or the older `max_tokens`) cuts the answer and sets `finish_reason: "length"`.
- `response_format` json_schema: the answer holds exactly the schema's properties; json_object: the
  messages must mention "json" (OpenAI's 400 otherwise).
- Token counts are a deterministic approximation, not a tokenizer: ceil(characters / 4) per message
  content plus 4 per message and 3 for the reply; completions ceil(characters / 4), at least 1.
  `reasoning_tokens` adds hidden reasoning the xAI way by default (in `total_tokens` but not in
  `completion_tokens`), or the OpenAI way (inside `completion_tokens`).

Answers come from an oracle: the test registers a hidden truth per market (`set_truth`), and a request whose
messages contain a line `Market: <TICKER>` gets a probability near it (seeded Gaussian noise). An optional line
`Yes price: 0.42` makes the oracle pick `buy_yes` / `buy_no` / `hold` against that price. Scripted replies
(`push` for the next requests, `override` for all of them) play a misbehaving provider: JSON wrapped in prose
or fences, truncated or malformed JSON, refusals, slow answers, 429 with Retry-After, 500, 503. Scripted
content ignores `response_format` on purpose: it models providers that do not honour it.

Not served: streaming, `n` > 1, tools (those requests get a 400 saying so).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from libs.common.logs import get_logger
from libs.common.simnet import SIM_LLM_KEY

log = get_logger(__name__)

MARKET_LINE = re.compile(r"^[ \t]*Market:[ \t]*(?P<ticker>[A-Za-z0-9][A-Za-z0-9._-]*)[ \t]*$", re.M)
PRICE_LINE = re.compile(r"^[ \t]*Yes price:[ \t]*(?P<price>[01](?:\.[0-9]+)?)[ \t]*$", re.M | re.I)
CHARS_PER_TOKEN = 4
DEFAULT_MODELS = ("grok-4.3", "grok-4.20", "grok-4.5", "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini")
# Since xAI's 2026-05-15 retirement these slugs answer as grok-4.3 (§B3).
DEFAULT_ALIASES: Mapping[str, str] = {"grok-4": "grok-4.3", "grok-4-latest": "grok-4.3", "grok-4.3-latest": "grok-4.3",
                                      "grok-3-mini": "grok-4.3"}
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
EDGE_TO_ACT = 0.03  # the oracle's action threshold against a `Yes price:` line

ReplyKind = Literal["oracle", "prose", "fenced", "truncated", "malformed", "no_json", "refusal", "text", "error"]

MALFORMED = '{"probability": "likely", "confidence": "high", "action": "buy yes", "reasoning": }'
NO_JSON = "I don't have enough information to put a number on this market."
REFUSAL = "I'm sorry, but I can't help with that request."


def count_tokens(text: str) -> int:
    """The fake's token count of a text: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _HttpError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", *, param: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error_body(message, type_, param=param, code=code)
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Reply:
    """One scripted behaviour of the fake; build with the class methods."""

    kind: ReplyKind = "oracle"
    delay_s: float = 0.0
    content: str | None = None
    finish_reason: str = "stop"
    refusal_text: str | None = None
    status: int = 200
    error_body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    usage: bool = True

    @classmethod
    def oracle(cls, delay_s: float = 0.0) -> Reply:
        """The default: the oracle's answer as bare JSON (shaped by response_format)."""
        return cls("oracle", delay_s)

    @classmethod
    def slow(cls, delay_s: float) -> Reply:
        """The oracle's answer after `delay_s` seconds."""
        return cls("oracle", delay_s)

    @classmethod
    def no_usage(cls) -> Reply:
        """The oracle's answer without a `usage` object, as some OpenAI-compatible local servers send it."""
        return cls("oracle", usage=False)

    @classmethod
    def prose(cls, delay_s: float = 0.0) -> Reply:
        """The oracle's JSON inside a sentence."""
        return cls("prose", delay_s)

    @classmethod
    def fenced(cls, delay_s: float = 0.0) -> Reply:
        """The oracle's JSON in a ```json fence between two lines of prose."""
        return cls("fenced", delay_s)

    @classmethod
    def truncated(cls) -> Reply:
        """The first half of the oracle's JSON, `finish_reason: "length"`."""
        return cls("truncated", finish_reason="length")

    @classmethod
    def malformed(cls, content: str = MALFORMED) -> Reply:
        """JSON-looking text that no repair turns into a valid forecast."""
        return cls("malformed", content=content)

    @classmethod
    def no_json(cls, content: str = NO_JSON) -> Reply:
        """Prose with no JSON at all."""
        return cls("no_json", content=content)

    @classmethod
    def refusal(cls, text: str = REFUSAL) -> Reply:
        """A refusal: `message.refusal` set, `content` null (OpenAI's shape)."""
        return cls("refusal", refusal_text=text)

    @classmethod
    def text(cls, content: str | None, *, finish_reason: str = "stop", delay_s: float = 0.0) -> Reply:
        """Exactly this content and finish reason."""
        return cls("text", delay_s, content=content, finish_reason=finish_reason)

    @classmethod
    def error(cls, status: int, message: str, type_: str, *, code: str | None = None, param: str | None = None,
              headers: Mapping[str, str] | None = None, delay_s: float = 0.0) -> Reply:
        """An HTTP error with OpenAI's error body."""
        if not 400 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP error status")
        return cls("error", delay_s, status=status, error_body=_error_body(message, type_, param=param, code=code),
                   headers=dict(headers or {}))

    @classmethod
    def rate_limited(cls, retry_after: int | None = 1, *, retry_after_ms: int | None = None,
                     quota: bool = False) -> Reply:
        """429: "Rate limit reached" with `retry-after` (whole seconds) / `retry-after-ms`, or quota exhausted."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        if quota:
            return cls.error(429, "You exceeded your current quota, please check your plan and billing details.",
                             "insufficient_quota", code="insufficient_quota", headers=headers)
        return cls.error(429, "Rate limit reached for requests. Please try again later.", "requests",
                         code="rate_limit_exceeded", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        """500 (or another 5xx) with OpenAI's server_error body."""
        return cls.error(status, "The server had an error while processing your request. Sorry about that!",
                         "server_error")

    @classmethod
    def overloaded(cls) -> Reply:
        """503: the engine is overloaded."""
        return cls.error(503, "The engine is currently overloaded, please try again later.", "server_error",
                         code="server_is_overloaded")


@dataclass(frozen=True)
class LlmRequest:
    """One request as received (the Authorization header is not kept, only whether it was right)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    auth_ok: bool
    at: float
    status: int = 0
    kind: str = ""

    @property
    def model(self) -> str | None:
        """The requested model, for chat completions."""
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def market(self) -> str | None:
        """The ticker named by a `Market:` line in the messages, if any."""
        return _market(self.body.get("messages")) if isinstance(self.body, dict) else None


def _texts(messages: Any) -> list[str]:
    out: list[str] = []
    for m in messages if isinstance(messages, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return out


def _market(messages: Any) -> str | None:
    found = [m.group("ticker") for t in _texts(messages) for m in MARKET_LINE.finditer(t)]
    return found[-1] if found else None


def _yes_price(messages: Any) -> float | None:
    found = [float(m.group("price")) for t in _texts(messages) for m in PRICE_LINE.finditer(t)]
    return found[-1] if found and 0.0 <= found[-1] <= 1.0 else None


class FakeLlm:
    """An OpenAI-compatible chat completions server with a truth-driven oracle and scriptable misbehaviour.

    For assertions: `requests` (every request, in order, failures included) and `chat_requests` (the
    completions only). Hooks: `set_truth`, `push`, `override`, `reasoning_tokens`.
    """

    def __init__(self, api_key: str = SIM_LLM_KEY, *, models: Iterable[str] = DEFAULT_MODELS,
                 aliases: Mapping[str, str] = DEFAULT_ALIASES, seed: int = 0, noise_sd: float = 0.02,
                 reasoning_tokens: int = 0, reasoning_in_completion: bool = False,
                 clock: Callable[[], float] = time.time, sharpness: float = 1.0) -> None:
        """`noise_sd`: the oracle's error around the truth; `reasoning_tokens`: hidden tokens added per answer;
        `sharpness` > 1 makes the oracle overconfident (its logit is the truth's times `sharpness`), the way
        language models tend to be — what the llm family's calibration is there to correct."""
        self.sharpness = sharpness
        self.api_key = api_key
        self.models = tuple(models)
        self.aliases = dict(aliases)
        self.seed = seed
        self.noise_sd = noise_sd
        self.reasoning_tokens = reasoning_tokens
        self.reasoning_in_completion = reasoning_in_completion
        self.clock = clock
        self.truths: dict[str, float] = {}
        # Where truths not registered by `set_truth` come from (the simulator: its world's hidden truth).
        self.truth_source: Callable[[str], float | None] | None = None
        self.requests: list[LlmRequest] = []
        self._asked: dict[str, int] = {}
        self._queue: list[tuple[str | None, Reply]] = []
        self._overrides: dict[str | None, Reply] = {}
        self._kinds: dict[int, str] = {}  # id(request) -> the reply kind chosen for it, for the record
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to hand a client (`…/v1`), valid once started."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeLlm:
        """Listen (port 0 = a free one)."""
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.host, self.port = host, self._runner.addresses[0][1]
        log.debug("fake_llm_started", url=self.url)
        return self

    async def stop(self) -> None:
        """Stop listening; slow answers in progress are cut short."""
        if self._runner is None:
            return
        self._closing.set()
        try:
            await self._runner.cleanup()
        finally:
            self._runner = None

    # -- hooks ----------------------------------------------------------------------------------------------

    def set_truth(self, ticker: str, probability: float) -> None:
        """The hidden probability of YES for `ticker`; the oracle answers near it."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        self.truths[ticker] = probability

    def push(self, *replies: Reply, model: str | None = None) -> None:
        """Answer the next requests (for `model`, or any) with these replies, one each, in order."""
        self._queue.extend((model, r) for r in replies)

    def override(self, reply: Reply | None, *, model: str | None = None) -> None:
        """Answer every request (for `model`, or any) with `reply` until cleared with None."""
        if reply is None:
            self._overrides.pop(model, None)
        else:
            self._overrides[model] = reply

    def reset(self) -> None:
        """Forget scripts, overrides and recorded requests (truths stay)."""
        self._queue.clear()
        self._overrides.clear()
        self.requests.clear()

    @property
    def chat_requests(self) -> list[LlmRequest]:
        """The chat completion requests received, oldest first."""
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    def oracle_answer(self, ticker: str | None, yes_price: float | None = None, *, draw: int = 0) -> dict[str, Any]:
        """What the oracle says about `ticker` on its `draw`-th question (deterministic for a seed)."""
        truth = self.truths.get(ticker) if ticker else None
        if truth is None and ticker and self.truth_source is not None:
            truth = self.truth_source(ticker)
        if truth is None:
            return {"probability": 0.5, "confidence": 0.1, "action": "hold",
                    "reasoning": f"No information about {ticker or 'this market'}; staying neutral."}
        rng = random.Random(f"{self.seed}:{ticker}:{draw}")
        if self.sharpness != 1.0 and 0.0 < truth < 1.0:
            truth = 1 / (1 + math.exp(-self.sharpness * math.log(truth / (1 - truth))))
        p = round(min(0.99, max(0.01, truth + rng.gauss(0.0, self.noise_sd))), 3)
        confidence = round(0.75 + rng.uniform(-0.05, 0.05), 2)
        action = "hold"
        if yes_price is not None:
            action = "buy_yes" if p - yes_price > EDGE_TO_ACT else "buy_no" if yes_price - p > EDGE_TO_ACT else "hold"
        return {"probability": p, "confidence": confidence, "action": action,
                "reasoning": f"The evidence for {ticker} points to about {p:.0%} for YES."}

    # -- HTTP -----------------------------------------------------------------------------------------------

    def _json(self, body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        h = {"x-request-id": f"req_{uuid.uuid4().hex}", **(headers or {})}
        return web.json_response(body, status=status, headers=h)

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        auth_ok = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        index = len(self.requests)
        self.requests.append(LlmRequest(request.method, request.path, headers, body, auth_ok, time.monotonic()))
        try:
            if not auth_ok:
                raise self._auth_error(request)
            response = await handler(request)
            kind = self._kinds.pop(id(request), "")
        except _HttpError as e:
            response = self._json(e.body, e.status, e.headers)
            kind = self._kinds.pop(id(request), "rejected")
        self.requests[index] = LlmRequest(request.method, request.path, headers, body, auth_ok,
                                          self.requests[index].at, response.status, kind)
        return response

    def _auth_error(self, request: web.Request) -> _HttpError:
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer ") or not given[7:].strip():
            return _HttpError(401, "You didn't provide an API key. You need to provide your API key in an "
                              "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        key = given[7:].strip()
        # OpenAI shows only the first 3 and last 4 characters of a wrong key.
        masked = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 7 else "*" * len(key)
        return _HttpError(401, f"Incorrect API key provided: {masked}. You can find your API key in your "
                          "account settings.", code="invalid_api_key")

    async def _not_found(self, request: web.Request) -> web.Response:
        raise _HttpError(404, f"Invalid URL ({request.method} {request.path})")

    def _model_object(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1_767_225_600, "owned_by": "kdesk-sim"}

    async def _models(self, request: web.Request) -> web.Response:
        names = [*self.models, *(a for a in self.aliases if a not in self.models)]
        return self._json({"object": "list", "data": [self._model_object(m) for m in names]})

    async def _model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in self.models and model not in self.aliases:
            raise _model_not_found(model)
        return self._json(self._model_object(model))

    def _pick(self, model: str | None) -> Reply:
        for i, (only, reply) in enumerate(self._queue):
            if only is None or only == model:
                del self._queue[i]
                return reply
        return self._overrides.get(model) or self._overrides.get(None) or Reply.oracle()

    async def _sleep(self, delay_s: float) -> None:
        if delay_s > 0:
            try:
                await asyncio.wait_for(self._closing.wait(), delay_s)
            except TimeoutError:
                pass

    async def _chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _HttpError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                             "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but "
                             "what was sent was not valid JSON.")
        reply = self._pick(body.get("model") if isinstance(body.get("model"), str) else None)
        self._kinds[id(request)] = reply.kind
        await self._sleep(reply.delay_s)
        if reply.kind == "error":
            return self._json(reply.error_body, reply.status, reply.headers)
        served, limit, fmt = self._validate(body)
        messages = body["messages"]
        ticker = _market(messages)
        draw = self._asked.get(ticker or "", 0)
        self._asked[ticker or ""] = draw + 1
        answer = self.oracle_answer(ticker, _yes_price(messages), draw=draw)
        content, finish, refusal = self._render(reply, answer, fmt)
        if content is not None and limit is not None and count_tokens(content) > limit:
            content, finish = content[: limit * CHARS_PER_TOKEN], "length"
        completion = self._completion(served, messages, content, refusal, finish)
        if not reply.usage:
            del completion["usage"]
        return self._json(completion)

    def _validate(self, body: dict[str, Any]) -> tuple[str, int | None, dict[str, Any] | None]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HttpError(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HttpError(400, f"{json.dumps(messages)} is too short - 'messages'", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                role = m.get("role") if isinstance(m, dict) else None
                raise _HttpError(400, f"Invalid value: {json.dumps(role)}. Supported values are: 'system', "
                                 "'assistant', 'user', 'tool', and 'developer'.", param=f"messages[{i}].role",
                                 code="invalid_value")
            content = m.get("content")
            if not (isinstance(content, str | list) or (content is None and m["role"] == "assistant")):
                raise _HttpError(400, f"Invalid type for 'messages[{i}].content': expected a string or an array.",
                                 param=f"messages[{i}].content", code="invalid_type")
        if body.get("stream"):
            raise _HttpError(400, "this fake does not stream; send stream=false", param="stream")
        if body.get("n") not in (None, 1):
            raise _HttpError(400, "this fake serves n=1 only", param="n")
        if body.get("tools"):
            raise _HttpError(400, "this fake does not call tools", param="tools")
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
            raise _HttpError(400, f"Invalid 'temperature': {temperature}. Expected a value between 0 and 2.",
                             param="temperature", code="invalid_value")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise _HttpError(400, f"Invalid 'max_completion_tokens': {limit}. Expected a positive integer.",
                             param="max_completion_tokens", code="invalid_value")
        fmt = self._response_format(body.get("response_format"), messages)
        served = self.aliases.get(model, model)
        if served not in self.models:
            raise _model_not_found(model)
        return served, limit, fmt

    def _response_format(self, fmt: Any, messages: list[Any]) -> dict[str, Any] | None:
        if fmt is None:
            return None
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            if not any("json" in t.lower() for t in _texts(messages)):
                raise _HttpError(400, "'messages' must contain the word 'json' in some form, to use "
                                 "'response_format' of type 'json_object'.", param="messages")
            return {}
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(spec.get("name", ""))):
                raise _HttpError(400, "Invalid 'response_format.json_schema.name': must be 1-64 characters of "
                                 "a-z, A-Z, 0-9, underscores and dashes.", param="response_format.json_schema.name",
                                 code="invalid_value")
            schema = spec.get("schema", {})
            if not isinstance(schema, dict):
                raise _HttpError(400, "Invalid schema for response_format: the schema must be an object.",
                                 param="response_format.json_schema.schema")
            return schema
        raise _HttpError(400, f"Invalid value: {json.dumps(kind)}. Supported values are: 'text', 'json_object' and "
                         "'json_schema'.", param="response_format.type", code="invalid_value")

    def _shaped(self, answer: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
        """The answer restricted and completed to a json_schema's properties, as strict structured output does."""
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict):
            return answer
        out: dict[str, Any] = {}
        for name, spec in props.items():
            if name in answer:
                out[name] = answer[name]
                continue
            spec = spec if isinstance(spec, dict) else {}
            if spec.get("enum"):
                out[name] = spec["enum"][0]
            else:
                out[name] = {"number": 0.5, "integer": 0, "boolean": False, "array": [], "object": {},
                             "null": None}.get(spec.get("type"), "n/a")
        return out

    def _render(self, reply: Reply, answer: dict[str, Any], fmt: dict[str, Any] | None
                ) -> tuple[str | None, str, str | None]:
        """(content, finish_reason, refusal) for a reply."""
        doc = json.dumps(answer)
        if reply.kind == "oracle":
            return json.dumps(self._shaped(answer, fmt)), "stop", None
        if reply.kind == "prose":
            return f"Based on what I can find, my forecast is {doc} and I would not weigh it too heavily.", "stop", None
        if reply.kind == "fenced":
            return f"Here is my forecast:\n```json\n{json.dumps(answer, indent=2)}\n```\nGood luck!", "stop", None
        if reply.kind == "truncated":
            return doc[: len(doc) // 2], "length", None
        if reply.kind == "refusal":
            return None, "stop", reply.refusal_text
        return reply.content, reply.finish_reason, None

    def _completion(self, served: str, messages: list[Any], content: str | None, refusal: str | None,
                    finish: str) -> dict[str, Any]:
        prompt = sum(count_tokens(t) for t in _texts(messages)) + 4 * len(messages) + 3
        visible = max(1, count_tokens(content or refusal or ""))
        reasoning = self.reasoning_tokens
        completion = visible + reasoning if self.reasoning_in_completion else visible
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": served,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + visible + reasoning,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_kdesk_sim",
        }


def _model_not_found(model: str) -> _HttpError:
    return _HttpError(404, f"The model `{model}` does not exist or you do not have access to it.",
                      code="model_not_found")


__all__ = ["DEFAULT_ALIASES", "DEFAULT_MODELS", "MARKET_LINE", "SIM_LLM_KEY", "FakeLlm", "LlmRequest", "Reply",
           "count_tokens"]
