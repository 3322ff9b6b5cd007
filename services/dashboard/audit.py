"""Control actions from the web page in `command_audit`, as the Telegram bot audits its commands.

Each step is a row: asked (`awaiting_confirmation`), confirmed and done (`ok` / `error`), confirmed too late
(`expired`), or refused (`denied`, `authorized` false). A row is written before the action is sent and its
outcome after, so a crash in between leaves a row with no outcome (in progress) rather than no row.

The table's `channel` is `telegram` or `cli` (a CHECK constraint of migration 0004): the page is an
operator console, so it writes `cli`; its rows are told apart by their `command_id`, `web:<uuid>`, and
their actor, `web:<role>@<client address>`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import CommandAudit, insert_if_new
from libs.common.events import utcnow

CHANNEL = "cli"
PREFIX = "web:"


def new_command_id() -> str:
    """A fresh audit id for one step of a web command."""
    return f"{PREFIX}{uuid.uuid4()}"


class ControlAudit:
    """Writes (and reads back) the page's rows of `command_audit`, for one mode."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.mode = mode
        self.clock = clock

    async def begin(self, *, command_id: str, actor: str, command: str, args: list[Any], authorized: bool,
                    outcome: str | None = None, detail: str | None = None) -> None:
        """A step as it arrives; `outcome` set closes it at once (denied, awaiting confirmation, expired)."""
        now = self.clock()
        async with self.sessions() as s, s.begin():
            await insert_if_new(s, CommandAudit, {
                "mode": self.mode, "command_id": command_id, "channel": CHANNEL, "actor": actor[:200],
                "chat_id": None, "command": command[:64], "args": args[:20], "authorized": authorized,
                "outcome": outcome, "detail": (detail or "")[:2000] or None, "received_at": now,
                "completed_at": now if outcome is not None else None}, key=["command_id"])

    async def finish(self, command_id: str, outcome: str, detail: str | None) -> None:
        """How a step that was let through ended."""
        async with self.sessions() as s, s.begin():
            await s.execute(update(CommandAudit).where(CommandAudit.command_id == command_id).values(
                outcome=outcome, detail=(detail or "")[:2000] or None, completed_at=self.clock()))

    async def recent(self, limit: int = 20) -> list[CommandAudit]:
        """The page's own audit rows of this mode, newest first."""
        async with self.sessions() as s:
            return list((await s.scalars(select(CommandAudit).where(
                CommandAudit.mode == self.mode, CommandAudit.command_id.startswith(PREFIX))
                .order_by(CommandAudit.id.desc()).limit(limit))).all())


__all__ = ["CHANNEL", "PREFIX", "ControlAudit", "new_command_id"]
