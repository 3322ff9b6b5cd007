"""`kdesk chat`: a terminal chat with the desk's bot through the simulator's fake Telegram Bot API.

What you type goes to the fake API as a message from the configured operator (an Update the bot
receives by long polling, exactly as from a phone); what the bot sends that chat is printed, with
inline buttons numbered — type the number to press one; a chart shows as its size and caption.
Only in sim mode: in the other modes the bot talks to the real Telegram.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import httpx


class Chat:
    """One operator's chat with the bot through the fake API's `/_sim/` endpoints."""

    def __init__(self, base_url: str, user_id: int, *, write: Any = None) -> None:
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=40)
        self.user_id = user_id
        self.next = 0
        self.buttons: list[tuple[int, str, str]] = []  # (message id, label, callback data)
        self.write = write or (lambda line: print(line, flush=True))
        self.received = 0

    async def close(self) -> None:
        await self.http.aclose()

    async def start(self) -> None:
        """Show only what comes after we joined, but keep the last keyboard (a number presses its button)."""
        r = await self.http.get("/_sim/sent", params={"chat_id": self.user_id, "after": 0, "wait": 0})
        r.raise_for_status()
        body = r.json()
        self.next = int(body["next"])
        for m in body["messages"]:
            self.buttons = _buttons(m) or self.buttons

    async def say(self, text: str) -> None:
        text = text.strip()
        if text.isdigit() and self.buttons and 1 <= int(text) <= len(self.buttons):
            message_id, label, data = self.buttons[int(text) - 1]
            self.write(f"  (pressed [{label}])")
            r = await self.http.post("/_sim/callback", json={"user_id": self.user_id, "message_id": message_id,
                                                             "data": data})
        else:
            r = await self.http.post("/_sim/message", json={"user_id": self.user_id, "text": text})
        r.raise_for_status()

    async def pull(self, wait_s: float) -> int:
        """Print what the bot sent since last time (waiting up to `wait_s` for something); how many."""
        r = await self.http.get("/_sim/sent", params={"chat_id": self.user_id, "after": self.next, "wait": wait_s})
        r.raise_for_status()
        body = r.json()
        self.next = int(body["next"])
        for m in body["messages"]:
            self.show(m)
        self.received += len(body["messages"])
        return len(body["messages"])

    def show(self, m: dict[str, Any]) -> None:
        if m.get("photo"):
            sizes = m["photo"]
            biggest = max(sizes, key=lambda p: p.get("width", 0) * p.get("height", 0))
            caption = m.get("caption") or ""
            self.write(f"bot> [chart {biggest.get('width')}×{biggest.get('height')}] {caption}".rstrip())
        else:
            for line in (m.get("text") or "").splitlines() or [""]:  # as Telegram shows it: markup parsed
                self.write(f"bot> {line}")
        buttons = _buttons(m)
        if buttons:
            self.buttons = buttons
            self.write("     " + "  ".join(f"[{i}] {label}" for i, (_, label, _) in enumerate(buttons, 1))
                       + "   (type the number to press)")


def _buttons(m: dict[str, Any]) -> list[tuple[int, str, str]]:
    rows = (m.get("reply_markup") or {}).get("inline_keyboard") or []
    return [(m["message_id"], b["text"], b["callback_data"]) for row in rows for b in row if "callback_data" in b]


async def run_chat(base_url: str, user_id: int, says: Sequence[str], wait_s: float) -> int:
    chat = Chat(base_url, user_id)
    try:
        await chat.start()
        if says:  # scripted: each line, then what the bot answers until it is quiet for `wait_s`
            for text in says:
                print(f"you> {text}", flush=True)
                await chat.say(text)
                while await chat.pull(wait_s):
                    pass
            return 0
        print(f"chatting with the desk's bot as operator {user_id}; /help lists commands; Ctrl-D quits",
              flush=True)

        async def listen() -> None:
            while True:
                await chat.pull(20.0)

        listener = asyncio.create_task(listen())
        try:
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    return 0
                if line.strip():
                    await chat.say(line)
        finally:
            listener.cancel()
    finally:
        await chat.close()


__all__ = ["Chat", "run_chat"]
