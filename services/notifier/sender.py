"""Drains the outbox to Telegram, in order, each message once.

Telegram's answers decide what happens to the head of the queue: 429 → wait `retry_after` and try
the same message again; 5xx, a timeout or a refused connection → back off and try again (order is
kept: nothing behind it goes first); 400 or 403 → Telegram will never take it (a chat that blocked
the bot, a malformed message): mark it failed, log why, go on. aiogram does not retry by itself.

Alerts that queued up for one chat go out as one message (up to Telegram's 4096 characters), so a
burst of distinct alerts after an outage is a handful of messages, not a flood the API would 429.
A message is marked sent right after Telegram's answer; a notifier killed in between would send that
one message again on restart (Telegram has no idempotency key) — the window is one HTTP answer wide.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup

from libs.common.backoff import Backoff, sleep_unless_stopped
from libs.common.db import OutboxMessage
from libs.common.logs import get_logger, redact_text
from services.notifier.store import NotifierStore

log = get_logger(__name__)

MAX_TEXT = 4096
JOIN = "\n\n"


def batch(rows: Sequence[OutboxMessage]) -> list[OutboxMessage]:
    """The head of the queue and the alerts behind it for the same chat that fit in one message.

    Order matters per chat, not across chats: rows of other chats are left for later, but the batch
    stops at the first row of this chat that is not a plain alert (a reply must not overtake it).
    """
    head = rows[0]
    if head.kind != "alert" or head.photo is not None or head.reply_markup:
        return [head]
    out, size = [head], len(head.body or "")
    for r in rows[1:]:
        if r.chat_id != head.chat_id:
            continue
        if r.kind != "alert" or r.photo is not None or r.reply_markup:
            break
        size += len(JOIN) + len(r.body or "")
        if size > MAX_TEXT:
            break
        out.append(r)
    return out


class Sender:
    """One task that sends what the outbox holds; `wake()` after enqueueing."""

    def __init__(self, bot: Bot, store: NotifierStore, *, backoff: Backoff | None = None) -> None:
        self.bot = bot
        self.store = store
        self.backoff = backoff or Backoff(base_s=0.5, cap_s=30.0)
        self._wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.last_ok: float | None = None  # monotonic time of Telegram's last good answer
        self.last_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                progressed = await self.step(stop)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # PostgreSQL down, say: keep the task, try again shortly
                self.last_error = redact_text(str(e))
                log.warning("outbox_step_failed", error=self.last_error)
                await self.backoff.sleep(stop)
                continue
            if not progressed:
                self._wake.clear()
                waiter = asyncio.create_task(self._wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()

    async def step(self, stop: asyncio.Event) -> bool:
        """Send the head of the queue (one message or one batch of alerts); False when nothing is pending."""
        rows = await self.store.pending(limit=200)
        if not rows:
            return False
        group = batch(rows)
        ids = [r.id for r in group]
        try:
            message_id = await self._send(group)
        except TelegramRetryAfter as e:
            self.last_error = f"429: retry after {e.retry_after}s"
            log.warning("telegram_rate_limited", retry_after_s=e.retry_after, queued=len(rows))
            await self.store.note_attempt(ids, self.last_error)
            await sleep_unless_stopped(stop, float(e.retry_after))
            return True
        except (TelegramBadRequest, TelegramForbiddenError, TelegramNotFound) as e:
            error = redact_text(str(e))
            self.failed += len(group)
            log.error("telegram_refused_message", chat_id=group[0].chat_id, kind=group[0].kind, error=error)
            await self.store.mark_failed(ids, error)
            return True
        except TelegramUnauthorizedError as e:
            # A revoked token: nothing will go out until the operator fixes it; keep everything queued.
            self.last_error = "Telegram refused the bot token (401): check KDESK_TELEGRAM_BOT_TOKEN"
            log.error("telegram_unauthorized", error=redact_text(str(e)))
            await self.store.note_attempt(ids, self.last_error)
            await sleep_unless_stopped(stop, 60.0)
            return True
        except Exception as e:  # TelegramServerError, TelegramNetworkError, timeouts: wait and retry, in order
            self.last_error = redact_text(f"{type(e).__name__}: {e}")
            log.warning("telegram_unavailable", error=self.last_error, queued=len(rows))
            await self.store.note_attempt(ids, self.last_error)
            await self.backoff.sleep(stop)
            return True
        self.backoff.reset()
        self.last_ok = time.monotonic()
        self.last_error = None
        await self.store.mark_sent(ids, message_id)
        self.sent += len(group)
        return True

    async def _send(self, group: Sequence[OutboxMessage]) -> int:
        head = group[0]
        markup = InlineKeyboardMarkup.model_validate(head.reply_markup) if head.reply_markup else None
        if head.photo is not None:
            msg = await self.bot.send_photo(head.chat_id, BufferedInputFile(head.photo, "chart.png"),
                                            caption=head.body, parse_mode="HTML", reply_markup=markup,
                                            disable_notification=head.silent)
        else:
            text = JOIN.join(r.body or "" for r in group)
            msg = await self.bot.send_message(head.chat_id, text, parse_mode="HTML", reply_markup=markup,
                                              disable_notification=all(r.silent for r in group))
        return msg.message_id


__all__ = ["Sender", "batch"]
