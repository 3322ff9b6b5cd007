"""Fake Telegram Bot API server: the wire protocol of api.telegram.org for the methods the desk uses.

The notifier talks to it over a real socket exactly as to Telegram
(`AiohttpSession(api=TelegramAPIServer.from_base(url))`), so what is tested is the real client
stack: aiogram's form encoding, its error classes, long polling, uploads. The behaviour follows
the Bot API docs and the telegram-bot-api server (ref/telegram_llm_forecast.md §A):

- `/bot<token>/<method>` (method names case-insensitive), GET or POST, parameters from the query
  string, url-encoded or multipart forms, or a JSON body; answers `{"ok": true, "result": …}` or
  `{"ok": false, "error_code": N, "description": "…"}` with HTTP status N.
- getUpdates confirms updates by offset, long-polls, and answers 409 to a poller that a newer
  getUpdates replaced; sendMessage parses Telegram's HTML into plain text + UTF-16 entities and
  enforces the limits (4096 characters, 1–64 byte callback data, …); sendPhoto reads the picture's
  size from its PNG/JPEG header; edits refuse "not modified"; callback queries must be answered once.

Tests drive the other side in-process (`inject_message`, `inject_callback`, `sent`, `wait_sent`,
`fail`, `outage`); people and `kdesk chat` use the same hooks over HTTP under `/_sim/`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import re
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any

from aiohttp import web

from libs.common.logs import get_logger

log = get_logger(__name__)

SIM_TOKEN = "7000000001:SIM-kdesk-fake-bot-token"  # `<bot id>:<secret>`, the shape aiogram insists on
SIM_USERNAME = "kdesk_sim_bot"

FIRST_UPDATE_ID = 780_000_001  # real ids are large positive numbers increasing by 1
MAX_TEXT = 4096  # characters after entity parsing
MAX_CAPTION = 1024
MAX_CALLBACK_ANSWER = 200
MAX_CALLBACK_DATA = 64  # bytes, not characters
LONG_POLL_MAX_S = 50  # telegram-bot-api's LONG_POLL_MAX_TIMEOUT
MAX_COMMANDS = 100

_TOKEN = re.compile(r"^(\d+):\S+$")
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_BOT_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_JSONISH = re.compile(r"^(?:[\[{].*|true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)$", re.S)

NOT_MODIFIED = ("message is not modified: specified new message content and reply markup are exactly the same as "
                "a current content and reply markup of the message")
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
CONFLICT_POLL = "terminated by other getUpdates request; make sure that only one bot instance is running"
CONFLICT_WEBHOOK = "can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"

# Update types a bot receives unless it asks for them by name (allowed_updates=[] means "all but these").
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
# Methods that put something in a chat: subject to `outage()` and flood control.
SEND_METHODS = frozenset({"sendmessage", "sendphoto", "editmessagetext", "editmessagecaption",
                          "editmessagereplymarkup"})
# Form fields that are strings by definition: never JSON-decode them ("123" stays the text "123").
_STRING_FIELDS = frozenset({"text", "caption", "parse_mode", "callback_query_id", "data", "url", "language_code",
                            "inline_message_id", "description", "short_description", "name", "secret_token",
                            "message_effect_id", "business_connection_id", "game_short_name", "action", "method",
                            "ip_address"})
_INLINE_ACTIONS = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
                   "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
                   "callback_game", "pay")


def bot_id(token: str) -> int:
    """The bot's user id, i.e. the digits before the colon; ValueError unless the token is `<digits>:<secret>`."""
    m = _TOKEN.match(token)
    if m is None:
        raise ValueError(f"{token!r} is not a bot token: expected '<digits>:<secret>' without spaces")
    return int(m.group(1))


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units, the unit of MessageEntity offsets and lengths (an emoji counts 2)."""
    return len(s.encode("utf-16-le")) // 2


class ApiError(Exception):
    """A Bot API failure, answered as `{"ok": false, "error_code", "description"}` with that HTTP status."""

    def __init__(self, code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


def bad_request(what: str) -> ApiError:
    """A 400 with Telegram's `Bad Request: ` prefix."""
    return ApiError(400, f"Bad Request: {what}")


def status_error(status: int, retry_after: int | None = None) -> ApiError:
    """The error Telegram's front end gives for an HTTP status: 429 with retry_after, 5xx by phrase."""
    if status == 429:
        ra = max(1, retry_after if retry_after is not None else 1)
        return ApiError(429, f"Too Many Requests: retry after {ra}", retry_after=ra)
    if status == 403:
        return ApiError(403, "Forbidden: bot was blocked by the user")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return ApiError(status, phrase if status >= 500 else f"{phrase}: injected failure")


# -- Telegram's HTML -------------------------------------------------------------------------------------------

_SIMPLE_TAGS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
                "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
                "code": "code", "pre": "pre"}
# The only named character references Telegram decodes; any other `&name;` stays literal text.
_NAMED_REFS = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


@dataclass
class _Open:
    tag: str
    start: int  # UTF-16 offset in the plain text
    order: int
    entity: dict[str, Any] | None


class _TelegramHTML(HTMLParser):
    """Telegram's HTML flavour (parse_mode=HTML) to plain text + entities, with its error messages."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=False)  # we decode references ourselves: only &lt; &gt; &amp; &quot;
        self.source = source
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.parts: list[str] = []
        self.pos = 0  # UTF-16 length of the text so far
        self.stack: list[_Open] = []
        self.opened = 0  # tags opened so far: ties in offset and length keep the order of the markup
        self.found: list[tuple[int, int, int, dict[str, Any]]] = []  # (offset, -length, order, entity)

    def fail(self, what: str) -> None:
        """Stop with Telegram's 400 for markup it cannot parse."""
        raise bad_request(f"can't parse entities: {what}")

    def index(self) -> int:
        """Where the parser is, as a character index into the source."""
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    def byte_offset(self, index: int | None = None) -> int:
        """A position as TDLib reports it: a byte offset into the UTF-8 source."""
        return len(self.source[: self.index() if index is None else index].encode())

    def emit(self, text: str) -> None:
        """Append plain text."""
        self.parts.append(text)
        self.pos += utf16_len(text)

    def handle_data(self, data: str) -> None:
        """Text; a raw `<` that html.parser let through as data is what TDLib calls an unsupported start tag."""
        i = data.find("<")
        if i >= 0:
            at = self.index() + i  # html.parser may hand over "<" alone: read the would-be tag name from the source
            name = re.match(r"[^\s>/]*", self.source[at + 1:]).group()  # type: ignore[union-attr]
            self.fail(f'Unsupported start tag "{name}" at byte offset {self.byte_offset(at)}')
        self.emit(data)

    def handle_entityref(self, name: str) -> None:
        """`&lt;` and friends; unknown names stay as typed."""
        self.emit(_NAMED_REFS.get(name, f"&{name};"))

    def handle_charref(self, name: str) -> None:
        """`&#65;` / `&#x41;`."""
        try:
            self.emit(chr(int(name[1:], 16) if name[:1] in "xX" else int(name)))
        except (ValueError, OverflowError):
            self.emit(f"&#{name};")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open an entity (or fail on a tag Telegram does not know)."""
        at = dict(attrs)
        offset = self.byte_offset()
        entity: dict[str, Any] | None
        if tag == "a":
            href = at.get("href")
            entity = {"type": "text_link", "url": href} if href else None  # no href: plain text
        elif tag == "span":
            if at.get("class") != "tg-spoiler":
                self.fail(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
            entity = {"type": "spoiler"}
        elif tag == "blockquote":
            entity = {"type": "expandable_blockquote" if "expandable" in at else "blockquote"}
        elif tag == "tg-emoji":
            if not at.get("emoji-id"):
                self.fail(f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {offset}')
            entity = {"type": "custom_emoji", "custom_emoji_id": at["emoji-id"]}
        elif tag in _SIMPLE_TAGS:
            entity = {"type": _SIMPLE_TAGS[tag]}
            lang = at.get("class") or ""
            # <pre><code class="language-x">…</code></pre> is one `pre` entity with a language, not two entities.
            if tag == "code" and lang.startswith("language-") and self.stack and self.stack[-1].tag == "pre" \
                    and self.stack[-1].entity is not None and self.stack[-1].start == self.pos:
                self.stack[-1].entity["language"] = lang[len("language-"):]
                entity = None
        else:
            self.fail(f'Unsupported start tag "{tag}" at byte offset {offset}')
            return
        self.opened += 1
        self.stack.append(_Open(tag, self.pos, self.opened, entity))

    def handle_endtag(self, tag: str) -> None:
        """Close the innermost entity; Telegram wants strictly nested tags."""
        offset = self.byte_offset()
        if not self.stack:
            self.fail(f"Unexpected end tag at byte offset {offset}")
        top = self.stack.pop()
        if top.tag != tag:
            self.fail(f'Unmatched end tag at byte offset {offset}, expected "</{top.tag}>", found "</{tag}>"')
        if top.entity is not None and self.pos > top.start:  # empty entities are dropped
            self.found.append((top.start, -(self.pos - top.start), top.order,
                               {"offset": top.start, "length": self.pos - top.start, **top.entity}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """`<b/>`: an empty entity, dropped."""
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_comment(self, data: str) -> None:
        """Comments are not part of Telegram's HTML."""
        self.fail(f'Unsupported start tag "!--" at byte offset {self.byte_offset()}')

    def handle_decl(self, decl: str) -> None:
        """`<!DOCTYPE …>` is not part of Telegram's HTML."""
        self.fail(f'Unsupported start tag "!{decl.split()[0] if decl else ""}" at byte offset {self.byte_offset()}')

    def handle_pi(self, data: str) -> None:
        """`<?…>` is not part of Telegram's HTML."""
        self.fail(f'Unsupported start tag "?" at byte offset {self.byte_offset()}')

    def unknown_decl(self, data: str) -> None:
        """`<![CDATA[…]]>` is not part of Telegram's HTML."""
        self.fail(f'Unsupported start tag "![" at byte offset {self.byte_offset()}')

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        """Parse everything; (plain text, entities sorted as Telegram sorts them: by offset, outer first)."""
        self.feed(self.source)
        self.close()  # flushes a dangling "<b" as data, which handle_data refuses
        if self.stack:
            self.fail(f'Can\'t find end tag corresponding to start tag "{self.stack[-1].tag}"')
        return "".join(self.parts), [e for *_, e in sorted(self.found, key=lambda t: t[:3])]


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram HTML → (plain text, entities with UTF-16 offsets); ApiError 400 "can't parse entities" if invalid."""
    return _TelegramHTML(source).result()


def trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip leading/trailing whitespace as Telegram does before storing a text, shifting and clipping entities."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    total = utf16_len(stripped)
    out = []
    for e in entities:
        start = max(e["offset"] - lead, 0)
        end = min(e["offset"] + e["length"] - lead, total)
        if end > start:
            out.append({**e, "offset": start, "length": end - start})
    return stripped, out


# -- pictures --------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk or a JPEG's SOF segment; None for anything else."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return (w, h) if w and h else None
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte before a marker
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers have no length
                i += 2
                continue
            if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
                return None
            (seg_len,) = struct.unpack(">H", data[i + 2:i + 4])
            if marker in _SOF_MARKERS:
                if i + 9 > len(data):
                    return None
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return (w, h) if w and h else None
            i += 2 + seg_len
    return None


@dataclass
class _Photo:
    data: bytes
    width: int
    height: int
    sizes: list[dict[str, Any]]


# -- the server ------------------------------------------------------------------------------------------------

@dataclass
class _Upload:
    """A file part of a multipart request."""

    name: str
    filename: str | None
    data: bytes


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    method: str | None  # lower-case method name; None = any but getUpdates
    left: int


@dataclass
class _Poll:
    """One parked getUpdates request."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    conflicted: bool = False


class _Signal:
    """A level-free 'something changed' broadcast: waiters re-check their own condition after each pulse."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def pulse(self) -> None:
        """Wake every current waiter (callable from sync code, unlike asyncio.Condition.notify_all)."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds (True) or `timeout` passes (False)."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._event.wait()
        except TimeoutError:
            return predicate()
        return True


Handler = Callable[[dict[str, Any], dict[str, _Upload]], Awaitable[Any]]


class FakeTelegram:
    """A Telegram Bot API server for one bot, with hooks to play the users and to break it.

    What the bot did, for assertions:
    - `sent`: every message the bot sent or edited, in order: the Message as returned plus `method`,
      `disable_notification` and, for photos, `photo_bytes` (the upload as received);
    - `calls`: a Counter of calls by method name (as documented, e.g. "sendMessage"), failed ones included;
    - `commands`: the last list setMyCommands accepted; `callback_answers`: every answerCallbackQuery.
    """

    def __init__(self, token: str = SIM_TOKEN, *, username: str = SIM_USERNAME, first_name: str = "kdesk (sim)",
                 chats: Iterable[int] = (), flood: tuple[float, float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`chats`: private chats (user ids) the bot may write to; `flood=(burst, per_s)`: a per-chat token bucket."""
        self.token = token
        self.bot_id = bot_id(token)
        self.bot_user: dict[str, Any] = {"id": self.bot_id, "is_bot": True, "first_name": first_name,
                                         "username": username}
        self.flood = flood
        self._clock = clock
        self.sent: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.callback_answers: list[dict[str, Any]] = []
        self.webhook_url = ""
        self._users: dict[int, dict[str, Any]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._history: dict[int, dict[int, dict[str, Any]]] = {}
        # Private chats and basic groups share one message-id sequence per account (MTProto's "common box");
        # supergroups count their own. Either way ids are unique within a chat and increase.
        self._box_next = 1
        self._channel_next: dict[int, int] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = FIRST_UPDATE_ID
        self._allowed: frozenset[str] | None = None  # None: everything but OPT_IN_UPDATES
        self._poll: _Poll | None = None
        self._queries: dict[str, dict[str, Any]] = {}
        self._next_query = 1
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.commands: list[dict[str, Any]] = []
        self._photos: dict[str, _Photo] = {}
        self._next_file = 1
        self._faults: list[_Fault] = []
        self._outage: int | None = None
        self._buckets: dict[int, tuple[float, float]] = {}
        self._sent_signal = _Signal()
        self._poll_signal = _Signal()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._methods: dict[str, tuple[str, Handler]] = {name.lower(): (name, h) for name, h in {
            "getMe": self._get_me, "getUpdates": self._get_updates, "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook, "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message, "sendPhoto": self._send_photo,
            "editMessageText": self._edit_message_text, "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup, "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action, "answerCallbackQuery": self._answer_callback_query,
            "setMyCommands": self._set_my_commands, "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands, "close": self._true, "logOut": self._true,
        }.items()}
        for user_id in chats:
            self.add_chat(user_id)

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for `TelegramAPIServer.from_base` (valid once started)."""
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen (port 0 = a free one; after `stop()`, pass `self.port` to come back on the same one); the URL."""
        app = web.Application(client_max_size=50 * 1024 * 1024)  # Bot API uploads go up to 50 MB
        app.router.add_post("/_sim/message", self._sim_message)
        app.router.add_post("/_sim/callback", self._sim_callback)
        app.router.add_get("/_sim/sent", self._sim_sent)
        app.router.add_post("/_sim/outage", self._sim_outage)
        app.router.add_post("/_sim/fail", self._sim_fail)
        app.router.add_get("/_sim/state", self._sim_state)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_route("*", "/bot{token}", self._api)  # no method in the path: a `method` argument names it
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._closing = False
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.host, self.port = host, self._runner.addresses[0][1]
        log.debug("fake_telegram_started", url=self.url)
        return self.url

    async def stop(self) -> None:
        """Stop listening (clients then get connection refused); parked requests answer first. State is kept."""
        if self._runner is None:
            return
        self._closing = True
        if self._poll is not None:
            self._poll.wake.set()
        self._sent_signal.pulse()
        try:
            await self._runner.cleanup()
        finally:
            self._runner = None
            self._closing = False

    # -- hooks: the users' side ------------------------------------------------------------------------------

    def add_chat(self, user_id: int, *, first_name: str = "Operator", username: str | None = None) -> dict[str, Any]:
        """A private chat with `user_id`: real Telegram lets a bot write only to users who started it."""
        user = self._user(user_id, first_name, username)
        chat = {"id": user_id, "type": "private", "first_name": user["first_name"]}
        if user.get("username"):
            chat["username"] = user["username"]
        self._chats[user_id] = chat
        self._history.setdefault(user_id, {})
        return chat

    def inject_message(self, user_id: int, text: str, *, chat_id: int | None = None, chat_type: str = "private",
                       first_name: str | None = None, username: str | None = None, title: str | None = None) -> int:
        """A user writes `text` (a private chat unless `chat_type` is group/supergroup); the update id."""
        user = self._user(user_id, first_name, username)
        chat = self._ensure_chat(user, chat_id, chat_type, title)
        fields: dict[str, Any] = {"text": text}
        m = _BOT_COMMAND.match(text)
        if m:  # clients mark a leading /command (with any @botname) as a bot_command entity
            fields["entities"] = [{"offset": 0, "length": utf16_len(m.group()), "type": "bot_command"}]
        return self._push_update("message", self._new_message(chat, user, fields))

    def inject_callback(self, user_id: int, message_id: int, data: str, *, chat_id: int | None = None) -> str:
        """A user presses an inline button with `data` under message `message_id`; the callback query id.

        `chat_id=None` looks in the user's private chat first, then in any chat (message ids of private
        chats are unique across them). The data is not checked against the message's current keyboard:
        a client showing a stale keyboard can still send it.
        """
        msg = self._find_message(message_id, chat_id if chat_id is not None else user_id, exact=chat_id is not None)
        if msg is None:
            raise KeyError(f"no message {message_id} in chat {chat_id if chat_id is not None else user_id}")
        user = self._user(user_id, None, None)
        qid = str(4_000_000_000_000_000_000 + self._next_query)
        self._next_query += 1
        chat_instance = str(int.from_bytes(hashlib.sha256(f"{self.bot_id}:{msg['chat']['id']}".encode())
                                           .digest()[:8], "big", signed=True))
        query = {"id": qid, "from": user, "message": copy.deepcopy(msg), "chat_instance": chat_instance,
                 "data": data}
        self._queries[qid] = query
        self._push_update("callback_query", query)
        return qid

    # -- hooks: what the bot did -----------------------------------------------------------------------------

    def messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Records in `sent` for one chat (all when None), oldest first."""
        return [r for r in self.sent if chat_id is None or r["chat"]["id"] == chat_id]

    async def wait_sent(self, n: int, *, chat_id: int | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `n` records exist (for `chat_id`, or in all); return them all."""
        if not await self._sent_signal.wait_for(lambda: len(self.messages(chat_id)) >= n, timeout):
            got = self.messages(chat_id)
            where = "" if chat_id is None else f" to chat {chat_id}"
            raise TimeoutError(f"waited {timeout}s for {n} message(s){where}, the bot sent {len(got)}: "
                               f"{[r.get('text', r.get('caption')) for r in got][-5:]}")
        return self.messages(chat_id)

    async def wait_polling(self, timeout: float = 5.0) -> None:
        """Wait until a getUpdates request is parked (long polling with nothing to return)."""
        if not await self._poll_signal.wait_for(lambda: self._poll is not None, timeout):
            raise TimeoutError(f"no getUpdates request parked within {timeout}s")

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by an offset."""
        return len(self._updates)

    # -- hooks: faults ---------------------------------------------------------------------------------------

    def fail(self, times: int = 1, *, status: int = 502, retry_after: int | None = None,
             method: str | None = None) -> None:
        """The next `times` calls of `method` (any method but getUpdates when None) fail with `status`."""
        if not 400 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP error status")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(_Fault(status, retry_after, method.lower() if method else None, times))

    def outage(self, status: int | None) -> None:
        """Every send-type call (send*/edit*) fails with `status` from now on; None ends the outage."""
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP error status")
        self._outage = status

    # -- HTTP: the Bot API ------------------------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)

    async def _api(self, request: web.Request) -> web.Response:
        try:
            return web.json_response({"ok": True, "result": await self._call(request)})
        except ApiError as e:
            body: dict[str, Any] = {"ok": False, "error_code": e.code, "description": e.description}
            headers = {}
            if e.retry_after is not None:
                body["parameters"] = {"retry_after": e.retry_after}
                headers["Retry-After"] = str(e.retry_after)
            return web.json_response(body, status=e.code, headers=headers)

    async def _call(self, request: web.Request) -> Any:
        if request.match_info["token"] != self.token:
            raise ApiError(401, "Unauthorized: invalid token specified")
        params, files = await self._params(request)
        raw_name = request.match_info.get("method") or str(params.get("method") or "")
        key = raw_name.lower()
        if key not in self._methods:
            raise ApiError(404, "Not Found: method not found")
        name, handler = self._methods[key]
        self.calls[name] += 1
        self._inject_faults(key, params)
        return await handler(params, files)

    def _inject_faults(self, key: str, params: dict[str, Any]) -> None:
        for f in self._faults:
            if f.method == key or (f.method is None and key != "getupdates"):
                f.left -= 1
                if f.left <= 0:
                    self._faults.remove(f)
                raise status_error(f.status, f.retry_after)
        if key in SEND_METHODS:
            if self._outage is not None:
                raise status_error(self._outage)
            self._flood_check(params.get("chat_id"))

    def _flood_check(self, raw_chat_id: Any) -> None:
        if self.flood is None:
            return
        try:
            chat_id = int(raw_chat_id)
        except (TypeError, ValueError):
            return  # an @username or nothing: the method itself will answer "chat not found"
        burst, per_s = self.flood
        now = self._clock()
        tokens, last = self._buckets.get(chat_id, (burst, now))
        tokens = min(burst, tokens + (now - last) * per_s)
        if tokens < 1:
            self._buckets[chat_id] = (tokens, now)
            raise status_error(429, math.ceil((1 - tokens) / per_s))  # Telegram rounds retry_after up to seconds
        self._buckets[chat_id] = (tokens - 1, now)

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, _Upload]]:
        """Arguments from the query string and the body, in every encoding the Bot API accepts."""
        params: dict[str, Any] = {k: _form_value(k, v) for k, v in request.query.items()}
        files: dict[str, _Upload] = {}
        if not request.can_read_body:
            return params, files
        try:
            if request.content_type == "application/json":
                body = await request.json()
                if not isinstance(body, dict):
                    raise bad_request("JSON body must be an object")
                params.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                for k, v in (await request.post()).items():
                    if isinstance(v, web.FileField):
                        files[k] = _Upload(k, v.filename, v.file.read())
                    else:
                        params[k] = _form_value(k, v.decode() if isinstance(v, bytes | bytearray) else v)
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "Request Entity Too Large") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request(f"can't parse request: {e}") from None
        return params, files

    # -- Bot API methods ------------------------------------------------------------------------------------------

    async def _true(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        return True

    async def _get_me(self, p: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        # getMe alone carries the bot's capability flags.
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False,
                "has_topics_enabled": False, "allows_users_to_create_topics": False}

    async def _get_updates(self, p: dict[str, Any], files: dict[str, _Upload]) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise ApiError(409, f"Conflict: {CONFLICT_WEBHOOK}")
        offset = _int(p, "offset", 0)
        limit = min(max(_int(p, "limit", 100), 1), 100)  # out-of-range values are clamped, not refused
        timeout = min(max(_int(p, "timeout", 0), 0), LONG_POLL_MAX_S)
        allowed = _json_arg(p, "allowed_updates")
        if isinstance(allowed, list):  # omitted = keep the previous setting; [] = the default set
            self._allowed = frozenset(map(str, allowed)) or None
        if self._poll is not None:  # a newer poller wins; the parked one gets 409
            self._poll.conflicted = True
            self._poll.wake.set()
            self._poll = None
        # An offset confirms every update below it for good; a negative one keeps only the last -offset.
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]

        def ready() -> list[dict[str, Any]]:
            return [u for u in self._updates if u["update_id"] >= offset][:limit]

        if ready() or timeout == 0 or self._closing:
            return ready()
        poll = _Poll()
        self._poll = poll
        self._poll_signal.pulse()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    await asyncio.wait_for(poll.wake.wait(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    return ready()
                if poll.conflicted:
                    raise ApiError(409, f"Conflict: {CONFLICT_POLL}")
                poll.wake.clear()
                if ready() or self._closing:
                    return ready()
        finally:
            if self._poll is poll:
                self._poll = None

    async def _delete_webhook(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        self.webhook_url = ""
        if _bool(p, "drop_pending_updates"):
            self._updates.clear()
        return True

    async def _set_webhook(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        # Nothing is ever delivered to the webhook; setting one only makes getUpdates answer 409, as Telegram does.
        self.webhook_url = str(p.get("url") or "")
        if _bool(p, "drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, p: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    async def _send_message(self, p: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        chat = self._chat(p)
        text, entities = _formatted(p, "text", "entities")
        if not text:
            raise bad_request("message text is empty")
        if len(text) > MAX_TEXT:
            raise bad_request("message is too long")
        fields: dict[str, Any] = {"text": text}
        if entities:
            fields["entities"] = entities
        self._common_fields(fields, chat, p)
        msg = self._new_message(chat, self.bot_user, fields)
        self._record("sendMessage", msg, p)
        return msg

    async def _send_photo(self, p: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        chat = self._chat(p)
        photo = self._photo(p.get("photo"), files)
        caption, entities = _formatted(p, "caption", "caption_entities")
        if len(caption) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        fields: dict[str, Any] = {"photo": copy.deepcopy(photo.sizes)}
        if caption:
            fields["caption"] = caption
        if entities:
            fields["caption_entities"] = entities
        if _bool(p, "has_spoiler"):
            fields["has_media_spoiler"] = True
        if _bool(p, "show_caption_above_media"):
            fields["show_caption_above_media"] = True
        self._common_fields(fields, chat, p)
        msg = self._new_message(chat, self.bot_user, fields)
        self._record("sendPhoto", msg, p, photo_bytes=photo.data)
        return msg

    async def _edit_message_text(self, p: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        msg = self._editable(p)
        if "text" not in msg:
            raise bad_request("there is no text in the message to edit")
        text, entities = _formatted(p, "text", "entities")
        if not text:
            raise bad_request("message text is empty")
        if len(text) > MAX_TEXT:
            raise bad_request("message is too long")
        # An edit without reply_markup removes the keyboard: the new content is text + entities + markup.
        markup = _markup(p, inline_only=True)
        return self._apply_edit("editMessageText", msg, p, {"text": text, "entities": entities or None,
                                                             "reply_markup": markup})

    async def _edit_message_caption(self, p: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        msg = self._editable(p)
        if "photo" not in msg:
            raise bad_request("there is no caption in the message to edit")
        caption, entities = _formatted(p, "caption", "caption_entities")
        if len(caption) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        return self._apply_edit("editMessageCaption", msg, p, {"caption": caption or None,
                                                                "caption_entities": entities or None,
                                                                "reply_markup": _markup(p, inline_only=True)})

    async def _edit_message_reply_markup(self, p: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        msg = self._editable(p)
        return self._apply_edit("editMessageReplyMarkup", msg, p, {"reply_markup": _markup(p, inline_only=True)})

    async def _delete_message(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        chat = self._chat(p)
        mid = _int(p, "message_id", 0)
        if self._history[chat["id"]].pop(mid, None) is None:
            raise bad_request("message to delete not found")
        return True

    async def _send_chat_action(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        self._chat(p)
        return True

    async def _answer_callback_query(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        qid = str(p.get("callback_query_id") or "")
        text = str(p.get("text") or "")
        if len(text) > MAX_CALLBACK_ANSWER:
            raise bad_request("MESSAGE_TOO_LONG")
        query = self._queries.pop(qid, None)  # a query can be answered once
        if query is None:
            raise bad_request(QUERY_TOO_OLD)
        self.callback_answers.append({"callback_query_id": qid, "text": text, "show_alert": _bool(p, "show_alert"),
                                      "url": p.get("url"), "cache_time": _int(p, "cache_time", 0),
                                      "user_id": query["from"]["id"], "data": query.get("data"),
                                      "message_id": query["message"]["message_id"]})
        return True

    async def _set_my_commands(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        commands = _json_arg(p, "commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > MAX_COMMANDS:
            raise bad_request("BOT_COMMANDS_TOO_MUCH")
        clean = []
        for c in commands:
            if not isinstance(c, dict) or not isinstance(c.get("command"), str):
                raise bad_request('can\'t parse BotCommand: Can\'t find field "command"')
            if not isinstance(c.get("description"), str):
                raise bad_request('can\'t parse BotCommand: Can\'t find field "description"')
            if not _COMMAND.match(c["command"]):  # 1–32 of a-z 0-9 _; no slash, no capitals
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(c["description"].strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            clean.append({"command": c["command"], "description": c["description"]})
        self._commands[self._scope_key(p)] = clean
        self.commands = copy.deepcopy(clean)
        return True

    async def _get_my_commands(self, p: dict[str, Any], files: dict[str, _Upload]) -> list[dict[str, Any]]:
        return copy.deepcopy(self._commands.get(self._scope_key(p), []))

    async def _delete_my_commands(self, p: dict[str, Any], files: dict[str, _Upload]) -> bool:
        self._commands.pop(self._scope_key(p), None)
        return True

    # -- method helpers ---------------------------------------------------------------------------------------

    def _chat(self, p: dict[str, Any]) -> dict[str, Any]:
        """The chat `chat_id` names (an id, or `@username`); 400 "chat not found" for any chat the bot can't see."""
        raw = p.get("chat_id")
        if raw is None or raw == "":
            raise bad_request("chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            for chat in self._chats.values():
                if str(chat.get("username", "")).lower() == raw[1:].lower():
                    return chat
            raise bad_request("chat not found")
        try:
            chat_id = int(raw)
        except (TypeError, ValueError):
            raise bad_request("chat not found") from None
        if chat_id not in self._chats:
            raise bad_request("chat not found")
        return self._chats[chat_id]

    def _common_fields(self, fields: dict[str, Any], chat: dict[str, Any], p: dict[str, Any]) -> None:
        """reply_markup, reply_to_message and has_protected_content of a new bot message."""
        markup = _markup(p, inline_only=False)
        if markup is not None and "inline_keyboard" in markup:  # reply keyboards are not echoed in the Message
            fields["reply_markup"] = markup
        reply = _json_arg(p, "reply_parameters")
        if isinstance(reply, dict):
            reply_id, lenient = _int(reply, "message_id", 0), _bool(reply, "allow_sending_without_reply")
        else:  # the pre-7.0 spelling, still accepted
            reply_id, lenient = _int(p, "reply_to_message_id", 0), _bool(p, "allow_sending_without_reply")
        if reply_id:
            target = self._history[chat["id"]].get(reply_id)
            if target is not None:
                fields["reply_to_message"] = {k: v for k, v in copy.deepcopy(target).items()
                                              if k != "reply_to_message"}
            elif not lenient:
                raise bad_request("message to be replied not found")
        if _bool(p, "protect_content"):
            fields["has_protected_content"] = True

    def _editable(self, p: dict[str, Any]) -> dict[str, Any]:
        """The bot's own message that `chat_id` + `message_id` name."""
        if p.get("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")  # this fake has no inline mode
        chat = self._chat(p)
        mid = _int(p, "message_id", 0)
        if not mid:
            raise bad_request("message identifier is not specified")
        msg = self._history[chat["id"]].get(mid)
        if msg is None:
            raise bad_request("message to edit not found")
        if msg.get("from", {}).get("id") != self.bot_id:
            raise bad_request("message can't be edited")
        return msg

    def _apply_edit(self, method: str, msg: dict[str, Any], p: dict[str, Any],
                    new: dict[str, Any]) -> dict[str, Any]:
        """Replace the given fields (None = remove); 400 "not modified" if nothing changes."""
        if all(msg.get(k) == v for k, v in new.items()):
            raise bad_request(NOT_MODIFIED)
        for k, v in new.items():
            if v is None:
                msg.pop(k, None)
            else:
                msg[k] = v
        msg["edit_date"] = int(time.time())
        self._record(method, msg, p)
        return copy.deepcopy(msg)

    def _photo(self, ref: Any, files: dict[str, _Upload]) -> _Photo:
        """The picture a `photo` argument refers to: an upload (`attach://<part>` or the part itself) or a file_id."""
        if isinstance(ref, str) and ref.startswith("attach://"):
            upload = files.get(ref[len("attach://"):])
            if upload is None:
                raise bad_request("wrong HTTP URL specified")  # the part it names is missing
            data = upload.data
        elif "photo" in files:
            data = files["photo"].data
        elif isinstance(ref, str) and ref in self._photos:
            return self._photos[ref]  # sending a file_id again reuses the stored file
        elif not ref:
            raise bad_request("there is no photo in the request")
        else:
            raise bad_request("wrong file identifier/HTTP URL specified")  # no downloads from URLs here
        size = image_size(data)
        if size is None:
            raise bad_request("IMAGE_PROCESS_FAILED")
        w, h = size
        if w + h > 10_000 or max(w, h) > 20 * min(w, h):
            raise bad_request("PHOTO_INVALID_DIMENSIONS")
        photo = _Photo(data, w, h, self._photo_sizes(data, w, h))
        for s in photo.sizes:
            self._photos[s["file_id"]] = photo
        return photo

    def _photo_sizes(self, data: bytes, w: int, h: int) -> list[dict[str, Any]]:
        """PhotoSize list as Telegram returns it: thumbnails of 90/320/800/1280 px smaller than the picture, then
        the picture itself (at most 2560 px a side), smallest first."""
        digest = hashlib.sha256(data).digest()
        longest = max(w, h)
        sides = [s for s in (90, 320, 800, 1280) if s < longest] + [min(longest, 2560)]
        out = []
        for side in sides:
            sw, sh = max(1, round(w * side / longest)), max(1, round(h * side / longest))
            n = self._next_file
            self._next_file += 1
            out.append({"file_id": "AgACAgIAAxkDAA" + hashlib.sha256(digest + n.to_bytes(8, "big")).hexdigest()[:40],
                        "file_unique_id": "AQAD" + hashlib.sha256(digest + str(side).encode()).hexdigest()[:12],
                        "width": sw, "height": sh,
                        "file_size": len(data) if side == longest else max(1, len(data) * sw * sh // (w * h))})
        return out

    def _scope_key(self, p: dict[str, Any]) -> tuple[str, str]:
        scope = _json_arg(p, "scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(p.get("language_code") or "")

    # -- state --------------------------------------------------------------------------------------------------

    def _user(self, user_id: int, first_name: str | None, username: str | None) -> dict[str, Any]:
        user = self._users.setdefault(user_id, {"id": user_id, "is_bot": False, "first_name": "Operator",
                                                "language_code": "en"})
        if first_name:
            user["first_name"] = first_name
        if username:
            user["username"] = username
        return user

    def _ensure_chat(self, user: dict[str, Any], chat_id: int | None, chat_type: str,
                     title: str | None) -> dict[str, Any]:
        if chat_type == "private":
            if chat_id is not None and chat_id != user["id"]:
                raise ValueError("a private chat's id is the user's id")
            if user["id"] not in self._chats:
                self.add_chat(user["id"], first_name=user["first_name"], username=user.get("username"))
            return self._chats[user["id"]]
        if chat_type not in ("group", "supergroup"):
            raise ValueError(f"chat_type {chat_type!r}: private, group or supergroup")
        if chat_id is None or chat_id >= 0:
            raise ValueError("a group needs a negative chat_id (supergroups: -100…)")
        chat = self._chats.setdefault(chat_id, {"id": chat_id, "type": chat_type, "title": title or "kdesk sim group"})
        self._history.setdefault(chat_id, {})
        return chat

    def _new_message(self, chat: dict[str, Any], sender: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        if chat["type"] == "supergroup":
            mid = self._channel_next.get(chat["id"], 1)
            self._channel_next[chat["id"]] = mid + 1
        else:
            mid = self._box_next
            self._box_next += 1
        msg = {"message_id": mid, "from": copy.deepcopy(sender), "chat": copy.deepcopy(chat),
               "date": int(time.time()), **fields}
        self._history[chat["id"]][mid] = msg
        return copy.deepcopy(msg)

    def _find_message(self, message_id: int, chat_id: int, *, exact: bool) -> dict[str, Any] | None:
        msg = self._history.get(chat_id, {}).get(message_id)
        if msg is not None or exact:
            return msg
        return next((h[message_id] for h in self._history.values() if message_id in h), None)

    def _push_update(self, kind: str, payload: dict[str, Any]) -> int:
        uid = self._next_update_id
        self._next_update_id += 1
        allowed = (kind in self._allowed) if self._allowed is not None else kind not in OPT_IN_UPDATES
        if allowed:  # types the bot did not ask for are never queued (the id is still used up)
            self._updates.append({"update_id": uid, kind: copy.deepcopy(payload)})
            if self._poll is not None:
                self._poll.wake.set()
        return uid

    def _record(self, method: str, msg: dict[str, Any], p: dict[str, Any], *, photo_bytes: bytes | None = None) -> None:
        rec = {**copy.deepcopy(msg), "method": method, "disable_notification": _bool(p, "disable_notification")}
        if photo_bytes is not None:
            rec["photo_bytes"] = photo_bytes
        self.sent.append(rec)
        self._sent_signal.pulse()

    # -- HTTP: /_sim/ control ----------------------------------------------------------------------------------

    async def _sim_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": "body must be JSON"}', content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
        return body

    async def _sim_message(self, request: web.Request) -> web.Response:
        b = await self._sim_body(request)
        try:
            uid = self.inject_message(int(b["user_id"]), str(b["text"]),
                                      chat_id=int(b["chat_id"]) if b.get("chat_id") is not None else None,
                                      chat_type=str(b.get("chat_type", "private")), first_name=b.get("first_name"),
                                      username=b.get("username"))
        except (KeyError, TypeError, ValueError) as e:
            return web.json_response({"error": f"need user_id and text: {e}"}, status=400)
        return web.json_response({"update_id": uid})

    async def _sim_callback(self, request: web.Request) -> web.Response:
        b = await self._sim_body(request)
        try:
            user_id, message_id, data = int(b["user_id"]), int(b["message_id"]), str(b["data"])
            chat_id = int(b["chat_id"]) if b.get("chat_id") is not None else None
        except (KeyError, TypeError, ValueError) as e:
            return web.json_response({"error": f"need user_id, message_id and data: {e}"}, status=400)
        try:
            qid = self.inject_callback(user_id, message_id, data, chat_id=chat_id)
        except KeyError as e:
            return web.json_response({"error": str(e.args[0])}, status=404)
        return web.json_response({"callback_query_id": qid})

    async def _sim_sent(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            chat_id = int(q["chat_id"]) if q.get("chat_id") else None
            after = max(int(q.get("after", "0")), 0)
            wait = min(max(float(q.get("wait", "0")), 0.0), 60.0)
        except ValueError:
            return web.json_response({"error": "chat_id and after are integers, wait is seconds"}, status=400)

        def new() -> list[dict[str, Any]]:
            return [r for r in self.sent[after:] if chat_id is None or r["chat"]["id"] == chat_id]

        await self._sent_signal.wait_for(lambda: bool(new()) or self._closing, wait)
        out = []
        for r in new():
            r = {k: v for k, v in r.items() if k != "photo_bytes"}
            if "photo" in r:
                r["photo_bytes_len"] = r["photo"][-1]["file_size"]
            out.append(r)
        return web.json_response({"messages": out, "next": max(after, len(self.sent))})

    async def _sim_outage(self, request: web.Request) -> web.Response:
        b = await self._sim_body(request)
        try:
            self.outage(int(b["status"]) if b.get("status") is not None else None)
        except (TypeError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"status": self._outage})

    async def _sim_fail(self, request: web.Request) -> web.Response:
        b = await self._sim_body(request)
        try:
            self.fail(int(b.get("times", 1)), status=int(b.get("status", 502)),
                      retry_after=int(b["retry_after"]) if b.get("retry_after") is not None else None,
                      method=b.get("method"))
        except (TypeError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"faults": len(self._faults)})

    async def _sim_state(self, request: web.Request) -> web.Response:
        return web.json_response({"bot": self.bot_user, "chats": list(self._chats.values()),
                                  "pending_updates": len(self._updates), "sent": len(self.sent),
                                  "calls": dict(self.calls), "commands": self.commands, "outage": self._outage,
                                  "webhook_url": self.webhook_url})


# -- argument decoding --------------------------------------------------------------------------------------------

def _form_value(name: str, value: str) -> Any:
    """A form or query value: aiogram JSON-encodes every non-string argument inside the form field."""
    if name in _STRING_FIELDS:
        return value
    s = value.strip()
    if _JSONISH.match(s):
        try:
            return json.loads(s)
        except ValueError:
            return value
    return value


def _json_arg(p: dict[str, Any], name: str) -> Any:
    """An object/array argument, which a JSON body gives parsed and a form gives as JSON text."""
    v = p.get(name)
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None
    return v


def _int(p: dict[str, Any], name: str, default: int) -> int:
    """An integer argument; like telegram-bot-api, anything unreadable counts as the default."""
    v = p.get(name)
    if isinstance(v, bool) or v is None:
        return default
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _bool(p: dict[str, Any], name: str) -> bool:
    v = p.get(name)
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1")
    return bool(v)


def _formatted(p: dict[str, Any], key: str, entities_key: str) -> tuple[str, list[dict[str, Any]]]:
    """(text, entities) of a text or caption after entity parsing: explicit entities win over parse_mode."""
    raw = p.get(key)
    text = "" if raw is None else str(raw)
    given = _json_arg(p, entities_key)
    mode = str(p.get("parse_mode") or "")
    if given:
        if not isinstance(given, list) or not all(isinstance(e, dict) and {"type", "offset", "length"} <= e.keys()
                                                  for e in given):
            raise bad_request(f"can't parse {entities_key} JSON object")
        entities = [dict(e) for e in given]
    elif mode.lower() == "html":
        text, entities = parse_html(text)
    elif mode.lower() in ("markdownv2", "markdown", ""):
        entities = []  # Markdown is accepted but not parsed: the text is kept as sent
    else:
        raise bad_request("unsupported parse_mode")
    return trim(text, entities)


def _markup(p: dict[str, Any], *, inline_only: bool) -> dict[str, Any] | None:
    """The reply_markup argument, validated; inline keyboards as Telegram checks their buttons."""
    m = _json_arg(p, "reply_markup")
    if m is None:
        return None
    if not isinstance(m, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in m:
        if inline_only:
            raise bad_request("inline keyboard expected")
        if not ({"keyboard", "remove_keyboard", "force_reply"} & m.keys()):
            raise bad_request("can't parse reply keyboard markup JSON object")
        return m
    rows = m["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    for row in rows:
        for b in row:
            if not isinstance(b, dict) or not isinstance(b.get("text"), str):
                raise bad_request('can\'t parse inline keyboard button: Field "text" must be of type String')
            actions = [a for a in _INLINE_ACTIONS if a in b]
            if not actions:
                raise bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline "
                                  "keyboard")
            if len(actions) > 1:
                raise bad_request(f"can't parse inline keyboard button: exactly one of {', '.join(actions)} "
                                  "must be specified")
            if "callback_data" in b:
                data = b["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
                    raise bad_request("BUTTON_DATA_INVALID")
            if "url" in b and (not isinstance(b["url"], str) or not b["url"]):
                raise bad_request("BUTTON_URL_INVALID")
    return {"inline_keyboard": rows}


__all__ = ["SIM_TOKEN", "SIM_USERNAME", "ApiError", "FakeTelegram", "bot_id", "image_size", "parse_html",
           "utf16_len"]
