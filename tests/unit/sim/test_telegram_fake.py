"""The fake Bot API speaks Telegram's protocol: driven by aiogram's real Bot over a socket, and by raw HTTP."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from services.sim.telegram import FIRST_UPDATE_ID, SIM_TOKEN, FakeTelegram, image_size, parse_html, trim, utf16_len

OPERATOR = 11_000_001
API = f"/bot{SIM_TOKEN}"


def png(w: int, h: int) -> bytes:
    """A real (decodable) RGB PNG of w×h grey pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80\x80\x80" * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=d.upper(), callback_data=d)
                                                  for d in data]])


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    f = FakeTelegram(chats=[OPERATOR])
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def make_bot(url: str, **kw: object) -> Bot:
    return Bot(SIM_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(url)), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    b = make_bot(fake.url)
    try:
        yield b
    finally:
        await b.session.close()


@pytest.fixture
async def http(fake: FakeTelegram) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as c:
        yield c


# -- envelope, getMe ----------------------------------------------------------------------------------------------

async def test_get_me_and_the_envelope(fake: FakeTelegram, bot: Bot, http: httpx.AsyncClient) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (7000000001, True, "kdesk_sim_bot")
    assert me.can_join_groups is True and me.supports_inline_queries is False
    r = await http.get(f"{API}/GETME")  # method names are case-insensitive, GET works too
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {"ok": True, "result": me.model_dump(by_alias=True, exclude_none=True)}
    r = await http.post("/bot7000000001:wrong/getMe")
    assert (r.status_code, r.json()) == (401, {"ok": False, "error_code": 401,
                                               "description": "Unauthorized: invalid token specified"})
    r = await http.post(f"{API}/sendTelepathy")
    assert (r.status_code, r.json()["description"]) == (404, "Not Found: method not found")
    r = await http.get("/favicon.ico")
    assert (r.status_code, r.json()["description"]) == (404, "Not Found")
    r = await http.post(API, data={"method": "getMe"})  # no method in the path: the `method` argument
    assert r.json()["result"]["id"] == 7000000001
    assert fake.calls["getMe"] == 3


# -- getUpdates ---------------------------------------------------------------------------------------------------

async def test_get_updates_offsets_confirm_and_negative_offsets(fake: FakeTelegram, bot: Bot,
                                                                http: httpx.AsyncClient) -> None:
    ids = [fake.inject_message(OPERATOR, f"m{i}") for i in range(4)]
    assert ids == list(range(FIRST_UPDATE_ID, FIRST_UPDATE_ID + 4))
    got = await bot.get_updates()
    assert [u.update_id for u in got] == ids and [u.message.text for u in got] == ["m0", "m1", "m2", "m3"]
    assert got[0].message.chat.id == OPERATOR and got[0].message.from_user.id == OPERATOR
    assert [u.update_id for u in await bot.get_updates(offset=ids[1])] == ids[1:]
    assert [u.update_id for u in await bot.get_updates()] == ids[1:], "an offset forgets the updates below it"
    assert [u.update_id for u in await bot.get_updates(limit=2)] == ids[1:3]
    r = await http.post(f"{API}/getUpdates", data={"limit": "0"})  # clamped to 1, not refused
    assert [u["update_id"] for u in r.json()["result"]] == [ids[1]]
    assert [u.update_id for u in await bot.get_updates(offset=-2)] == ids[2:]
    assert fake.pending_updates == 2, "a negative offset keeps only the last -offset updates"
    assert await bot.get_updates(offset=ids[-1] + 1) == [] and fake.pending_updates == 0


async def test_long_poll_answers_when_an_update_arrives(fake: FakeTelegram, bot: Bot) -> None:
    t0 = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await fake.wait_polling()
    assert not poll.done()
    uid = fake.inject_message(OPERATOR, f"/status@{fake.bot_user['username']} now")
    [u] = await asyncio.wait_for(poll, 2)
    assert u.update_id == uid and time.monotonic() - t0 < 2
    [e] = u.message.entities
    assert (e.type, e.offset, e.length) == ("bot_command", 0, len("/status@kdesk_sim_bot"))


async def test_a_second_poller_ends_the_parked_one_with_409(fake: FakeTelegram, bot: Bot,
                                                             http: httpx.AsyncClient) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await fake.wait_polling()
    r = await http.post(f"{API}/getUpdates", data={"timeout": "0"})
    assert r.json() == {"ok": True, "result": []}
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await asyncio.wait_for(poll, 2)
    fake.inject_message(OPERATOR, "queued")
    assert await bot.set_webhook("https://example.invalid/hook") is True
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates()
    assert await bot.delete_webhook(drop_pending_updates=True) is True
    assert await bot.get_updates() == [] and fake.pending_updates == 0


# -- sendMessage --------------------------------------------------------------------------------------------------

async def test_send_message_html_becomes_text_and_utf16_entities(fake: FakeTelegram, bot: Bot) -> None:
    msg = await bot.send_message(OPERATOR, '<b>bold</b> 😀 <i>it</i> &lt;x&gt; <a href="https://e.x/?a=1&amp;b=2">'
                                           "link</a>", parse_mode="HTML", disable_notification=True,
                                 reply_markup=keyboard("go"))
    assert msg.text == "bold 😀 it <x> link"
    assert [(e.type, e.offset, e.length) for e in msg.entities] == [("bold", 0, 4), ("italic", 8, 2),
                                                                      ("text_link", 15, 4)]
    assert msg.entities[2].url == "https://e.x/?a=1&b=2"
    assert msg.from_user.id == fake.bot_id and msg.chat.type == "private" and msg.chat.first_name == "Operator"
    assert msg.reply_markup.inline_keyboard[0][0].callback_data == "go"
    assert abs(msg.date.timestamp() - time.time()) < 5
    [rec] = fake.sent
    assert (rec["method"], rec["message_id"], rec["chat"]["id"]) == ("sendMessage", msg.message_id, OPERATOR)
    assert rec["disable_notification"] is True and rec["text"] == msg.text
    second = await bot.send_message(OPERATOR, "plain")
    assert second.message_id > msg.message_id and second.entities is None
    assert fake.sent[-1]["disable_notification"] is False


def test_html_parser_nesting_pre_language_spoilers_and_trim() -> None:
    text, ents = trim(*parse_html('  <b>a<i>b</i></b>\n<pre><code class="language-py">x = 1</code></pre>'
                            '<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler><blockquote expandable>'
                            "q</blockquote><u>u</u><s>s</s>&#x41;&#66;&nbsp; \n"))
    assert text == "ab\nx = 1stqusAB&nbsp;"
    assert ents == [{"offset": 0, "length": 2, "type": "bold"}, {"offset": 1, "length": 1, "type": "italic"},
                    {"offset": 3, "length": 5, "type": "pre", "language": "py"},
                    {"offset": 8, "length": 1, "type": "spoiler"}, {"offset": 9, "length": 1, "type": "spoiler"},
                    {"offset": 10, "length": 1, "type": "expandable_blockquote"},
                    {"offset": 11, "length": 1, "type": "underline"},
                    {"offset": 12, "length": 1, "type": "strikethrough"}]
    assert utf16_len("😀a") == 3


@pytest.mark.parametrize(("html", "error"), [
    ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
    ("é <br>", 'Unsupported start tag "br" at byte offset 3'),  # byte offsets: é is two bytes
    ("x <3", 'Unsupported start tag "3" at byte offset 2'),
    ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
    ("x</b>", "Unexpected end tag at byte offset 1"),
    ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
    ('<span class="x">y</span>', 'Tag "span" must have class "tg-spoiler"'),
])
async def test_bad_html_is_a_400_cant_parse_entities(bot: Bot, html: str, error: str) -> None:
    with pytest.raises(TelegramBadRequest) as e:
        await bot.send_message(OPERATOR, html, parse_mode="HTML")
    assert e.value.message.startswith(f"Bad Request: can't parse entities: {error}")


async def test_send_message_limits_and_unknown_chats(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest) as e:
        await bot.send_message(99, "hi")
    assert e.value.message == "Bad Request: chat not found"
    with pytest.raises(TelegramBadRequest) as e:
        await bot.send_message(OPERATOR, "a" * 4097)
    assert e.value.message == "Bad Request: message is too long"
    ok = await bot.send_message(OPERATOR, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")  # counted after parsing
    assert len(ok.text) == 4096
    with pytest.raises(TelegramBadRequest) as e:
        await bot.send_message(OPERATOR, "<b> </b>\n", parse_mode="HTML")
    assert e.value.message == "Bad Request: message text is empty"
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(OPERATOR, "x", reply_markup=keyboard("é" * 33))  # 66 bytes
    assert (await bot.send_message(OPERATOR, "x", reply_markup=keyboard("é" * 32))).reply_markup is not None
    with pytest.raises(TelegramBadRequest, match="unsupported parse_mode"):
        await bot.send_message(OPERATOR, "x", parse_mode="BBCode")
    assert len(fake.sent) == 2, "refused messages are not recorded"


async def test_raw_encodings_keep_strings_strings(fake: FakeTelegram, http: httpx.AsyncClient) -> None:
    r = await http.post(f"{API}/sendMessage", json={"chat_id": str(OPERATOR), "text": "123",
                                                    "reply_markup": {"inline_keyboard": [[{"text": "A",
                                                                                           "callback_data": "a"}]]}})
    assert r.json()["result"]["text"] == "123" and r.json()["result"]["reply_markup"]["inline_keyboard"]
    r = await http.post(f"{API}/sendMessage", data={"chat_id": str(OPERATOR), "text": "true",
                                                     "disable_notification": "true"})
    assert r.json()["result"]["text"] == "true" and fake.sent[-1]["disable_notification"] is True
    r = await http.get(f"{API}/sendMessage", params={"chat_id": OPERATOR, "text": "[1, 2]"})
    assert r.json()["result"]["text"] == "[1, 2]"
    r = await http.post(f"{API}/sendMessage", data={"chat_id": str(OPERATOR), "text": "x",
                                                     "reply_markup": '{"inline_keyboard": [[{"text": "A"}]]}'})
    assert r.status_code == 400 and "Text buttons are unallowed" in r.json()["description"]


# -- errors: 429, 5xx, outage, flood, stop/start ------------------------------------------------------------------

async def test_429_is_retry_after_with_header(fake: FakeTelegram, bot: Bot, http: httpx.AsyncClient) -> None:
    fake.fail(status=429, retry_after=7, method="sendMessage")
    await bot.get_me()  # another method does not use up a fault aimed at sendMessage
    with pytest.raises(TelegramRetryAfter) as e:
        await bot.send_message(OPERATOR, "x")
    assert e.value.retry_after == 7
    fake.fail(status=429, retry_after=3)
    r = await http.post(f"{API}/sendMessage", data={"chat_id": OPERATOR, "text": "x"})
    assert (r.status_code, r.headers["Retry-After"]) == (429, "3")
    assert r.json() == {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
                        "parameters": {"retry_after": 3}}
    assert (await bot.send_message(OPERATOR, "now")).text == "now" and len(fake.sent) == 1


async def test_5xx_faults_and_outage(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail(2, status=502)
    assert await bot.get_updates() == [], "faults without a method spare getUpdates"
    for _ in range(2):
        with pytest.raises(TelegramServerError, match="Bad Gateway"):
            await bot.send_message(OPERATOR, "x")
    assert (await bot.send_message(OPERATOR, "after")).text == "after"
    fake.fail(status=500, method="getMe")
    with pytest.raises(TelegramServerError, match="Internal Server Error"):
        await bot.get_me()
    fake.outage(502)
    for _ in range(3):
        with pytest.raises(TelegramServerError):
            await bot.send_message(OPERATOR, "x")
    assert (await bot.get_me()).id == fake.bot_id, "an outage hits the send-type methods only"
    fake.outage(None)
    assert (await bot.send_message(OPERATOR, "back")).text == "back"
    assert [r["text"] for r in fake.sent] == ["after", "back"]
    assert fake.calls["sendMessage"] == 7


async def test_flood_control_is_a_per_chat_token_bucket() -> None:
    now = [1000.0]
    fake = FakeTelegram(chats=[OPERATOR, 22], flood=(2, 0.5), clock=lambda: now[0])
    await fake.start()
    bot = make_bot(fake.url)
    try:
        await bot.send_message(OPERATOR, "1")
        await bot.send_message(OPERATOR, "2")
        with pytest.raises(TelegramRetryAfter) as e:
            await bot.send_message(OPERATOR, "3")
        assert e.value.retry_after == 2  # one token at 0.5/s
        await bot.send_message(22, "other chat")
        now[0] += 2.0
        assert (await bot.send_message(OPERATOR, "3")).text == "3"
    finally:
        await bot.session.close()
        await fake.stop()


async def test_stop_refuses_connections_and_start_comes_back_on_the_port(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(OPERATOR, "before")
    port = fake.port
    await fake.stop()
    with pytest.raises(TelegramNetworkError):
        await bot.get_me()
    async with httpx.AsyncClient() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/bot{SIM_TOKEN}/getMe")
    assert await fake.start(port=port) == f"http://127.0.0.1:{port}"
    assert (await bot.send_message(OPERATOR, "after")).message_id > fake.sent[0]["message_id"]
    assert [r["text"] for r in fake.sent] == ["before", "after"]


# -- photos, edits, callbacks, commands ---------------------------------------------------------------------------

async def test_send_photo_reads_the_size_and_keeps_the_bytes(fake: FakeTelegram, bot: Bot) -> None:
    data = png(400, 300)
    msg = await bot.send_photo(OPERATOR, BufferedInputFile(data, "chart.png"), caption="<b>BTC</b> ladder",
                               parse_mode="HTML", reply_markup=keyboard("more"))
    assert [(p.width, p.height) for p in msg.photo] == [(90, 68), (320, 240), (400, 300)]
    assert msg.photo[-1].file_size == len(data) and len({p.file_id for p in msg.photo}) == 3
    assert msg.caption == "BTC ladder" and [(e.type, e.offset, e.length) for e in msg.caption_entities] == \
        [("bold", 0, 3)]
    [rec] = fake.sent
    assert rec["method"] == "sendPhoto" and rec["photo_bytes"] == data and rec["reply_markup"]
    again = await bot.send_photo(OPERATOR, msg.photo[-1].file_id)  # a file_id is reusable
    assert (again.photo[-1].width, fake.sent[-1]["photo_bytes"]) == (400, data)
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(OPERATOR, BufferedInputFile(b"GIF89a not really", "x.gif"))
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(OPERATOR, BufferedInputFile(data, "c.png"), caption="c" * 1025)


def test_image_size_reads_png_and_jpeg_headers() -> None:
    assert image_size(png(7, 5)) == (7, 5)
    image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    image.new("RGB", (123, 45)).save(buf, "JPEG")
    assert image_size(buf.getvalue()) == (123, 45)
    assert image_size(b"\xff\xd8\xff\xd9") is None and image_size(b"not an image") is None


async def test_edits_not_modified_and_missing(fake: FakeTelegram, bot: Bot) -> None:
    msg = await bot.send_message(OPERATOR, "<b>ask</b>", parse_mode="HTML", reply_markup=keyboard("yes", "no"))
    with pytest.raises(TelegramBadRequest, match="message is not modified: specified new message content and "
                                                 "reply markup are exactly the same"):
        await bot.edit_message_text("<b>ask</b>", chat_id=OPERATOR, message_id=msg.message_id, parse_mode="HTML",
                                    reply_markup=keyboard("yes", "no"))
    edited = await bot.edit_message_text("<b>ask</b>", chat_id=OPERATOR, message_id=msg.message_id,
                                         parse_mode="HTML")  # no markup: the keyboard goes
    assert isinstance(edited, Message) and edited.reply_markup is None and edited.edit_date is not None
    assert edited.message_id == msg.message_id and edited.entities[0].type == "bold"
    edited = await bot.edit_message_reply_markup(chat_id=OPERATOR, message_id=msg.message_id,
                                                 reply_markup=keyboard("again"))
    assert edited.reply_markup.inline_keyboard[0][0].callback_data == "again" and edited.text == "ask"
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=OPERATOR, message_id=msg.message_id,
                                            reply_markup=keyboard("again"))
    with pytest.raises(TelegramBadRequest) as e:
        await bot.edit_message_text("x", chat_id=OPERATOR, message_id=msg.message_id + 100)
    assert e.value.message == "Bad Request: message to edit not found"
    assert [r["method"] for r in fake.sent] == ["sendMessage", "editMessageText", "editMessageReplyMarkup"]
    assert "reply_markup" not in fake.sent[1] and fake.sent[2]["reply_markup"]


async def test_callback_query_is_answered_once(fake: FakeTelegram, bot: Bot) -> None:
    msg = await bot.send_message(OPERATOR, "flatten?", reply_markup=keyboard("flatten"))
    qid = fake.inject_callback(OPERATOR, msg.message_id, "flatten")
    [u] = await bot.get_updates()
    cb = u.callback_query
    assert (cb.id, cb.data, cb.from_user.id, cb.message.message_id) == (qid, "flatten", OPERATOR, msg.message_id)
    assert cb.message.reply_markup.inline_keyboard[0][0].callback_data == "flatten" and cb.chat_instance
    assert await bot.answer_callback_query(qid, text="done") is True
    with pytest.raises(TelegramBadRequest, match="query is too old and response timeout expired or query ID is "
                                                 "invalid"):
        await bot.answer_callback_query(qid)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query("12345")
    assert fake.callback_answers == [{"callback_query_id": qid, "text": "done", "show_alert": False, "url": None,
                                      "cache_time": 0, "user_id": OPERATOR, "data": "flatten",
                                      "message_id": msg.message_id}]
    with pytest.raises(KeyError):
        fake.inject_callback(OPERATOR, msg.message_id + 50, "x")


async def test_set_my_commands_validates_and_get_returns_them(fake: FakeTelegram, bot: Bot) -> None:
    cmds = [BotCommand(command="status", description="desk status"), BotCommand(command="pause_all",
                                                                                description="pause")]
    assert await bot.set_my_commands(cmds) is True
    assert [(c.command, c.description) for c in await bot.get_my_commands()] == [("status", "desk status"),
                                                                                 ("pause_all", "pause")]
    assert fake.commands == [{"command": "status", "description": "desk status"},
                             {"command": "pause_all", "description": "pause"}]
    for bad, error in [("Status", "BOT_COMMAND_INVALID"), ("/status", "BOT_COMMAND_INVALID"),
                       ("x" * 33, "BOT_COMMAND_INVALID")]:
        with pytest.raises(TelegramBadRequest, match=error):
            await bot.set_my_commands([BotCommand(command=bad, description="d")])
    for desc in ("", "d" * 257):
        with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_DESCRIPTION_INVALID"):
            await bot.set_my_commands([BotCommand(command="ok", description=desc)])
    assert len(await bot.get_my_commands()) == 2, "a refused list changes nothing"
    assert await bot.delete_my_commands() is True and await bot.get_my_commands() == []


# -- /_sim/ and polling -------------------------------------------------------------------------------------------

async def test_sim_http_endpoints(fake: FakeTelegram, bot: Bot, http: httpx.AsyncClient) -> None:
    r = await http.post("/_sim/message", json={"user_id": 55, "text": "/start"})
    uid = r.json()["update_id"]
    [u] = await bot.get_updates()
    assert (u.update_id, u.message.text, u.message.chat.id) == (uid, "/start", 55)
    r = await http.get("/_sim/sent", params={"chat_id": 55, "after": 0, "wait": 0})
    assert r.json() == {"messages": [], "next": 0}
    waiting = asyncio.create_task(http.get("/_sim/sent", params={"chat_id": 55, "after": 0, "wait": 5}))
    await bot.send_message(OPERATOR, "not for 55")
    msg = await bot.send_message(55, "hello", reply_markup=keyboard("ping"))  # the injected chat is now known
    body = (await asyncio.wait_for(waiting, 2)).json()
    assert [m["text"] for m in body["messages"]] == ["hello"] and body["next"] == 2
    await bot.send_photo(55, BufferedInputFile(png(10, 10), "p.png"))
    body = (await http.get("/_sim/sent", params={"chat_id": 55, "after": body["next"]})).json()
    [photo] = body["messages"]
    assert "photo_bytes" not in photo and photo["photo_bytes_len"] == len(png(10, 10)) and body["next"] == 3
    r = await http.post("/_sim/callback", json={"user_id": 55, "message_id": msg.message_id, "data": "ping"})
    [u] = await bot.get_updates(offset=uid + 1)
    assert u.callback_query.id == r.json()["callback_query_id"] and u.callback_query.data == "ping"
    r = await http.post("/_sim/callback", json={"user_id": 55, "message_id": 999_999, "data": "ping"})
    assert r.status_code == 404
    assert (await http.post("/_sim/outage", json={"status": 502})).json() == {"status": 502}
    with pytest.raises(TelegramServerError):
        await bot.send_message(55, "x")
    await http.post("/_sim/outage", json={"status": None})
    assert (await bot.send_message(55, "ok")).text == "ok"
    assert (await http.post("/_sim/message", json={"text": "no user"})).status_code == 400


async def test_dispatcher_polling_reaches_a_handler(fake: FakeTelegram) -> None:
    bot = make_bot(fake.url, default=DefaultBotProperties(parse_mode="HTML"))
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(f"hello <b>{message.from_user.first_name}</b>")

    dp = Dispatcher()
    dp.include_router(router)
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=5))
    try:
        fake.inject_message(OPERATOR, "/start", first_name="Ada")
        [rec] = await fake.wait_sent(1, chat_id=OPERATOR, timeout=5)
        assert rec["text"] == "hello Ada" and rec["entities"] == [{"offset": 6, "length": 3, "type": "bold"}]
        assert fake.calls["getMe"] == 1 and fake.calls["getUpdates"] >= 1
    finally:
        await dp.stop_polling()
        await polling
    assert bot.session._session is None or bot.session._session.closed  # start_polling closed it
