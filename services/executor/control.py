"""The desk's switches, from the `control` KV bucket (written by the CLI, the notifier and the executor).

Values are small UTF-8 strings: `paused` is `true`/`false` (or JSON `{"paused": true, "reason": ...}`),
`mode` is a mode name, `live_armed_until` an ISO-8601 UTC time, `family.<f>.enabled` `true`/`false`.
A missing key means the safe default: not paused, no family switched off, live not armed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.js.kv import KeyValue

from libs.common.config import Mode
from libs.common.logs import get_logger
from libs.common.subjects import ControlKey

log = get_logger(__name__)

_TRUE = {"1", "true", "yes", "on"}


@dataclass(slots=True)
class ControlState:
    """What the KV says now."""

    paused: bool = False
    pause_reason: str | None = None
    mode: str | None = None
    live_armed_until: datetime | None = None
    families_off: set[str] = field(default_factory=set)

    def apply(self, key: str, value: bytes | None) -> None:
        """Fold one KV update (None = deleted) into the state; malformed values fail safe."""
        text = (value or b"").decode(errors="replace").strip()
        if key == ControlKey.PAUSED:
            self.paused, self.pause_reason = _parse_paused(text)
        elif key == ControlKey.MODE:
            self.mode = text or None
        elif key == ControlKey.LIVE_ARMED_UNTIL:
            try:
                t = datetime.fromisoformat(text) if text else None
                self.live_armed_until = t if t is None or t.tzinfo is not None else None
            except ValueError:
                log.warning("control_bad_value", key=key, value=text[:60])
                self.live_armed_until = None
        elif key.startswith("family.") and key.endswith(".enabled"):
            family = key[len("family."):-len(".enabled")]
            if text and text.lower() not in _TRUE:
                self.families_off.add(family)
            else:
                self.families_off.discard(family)

    def live_armed(self, now: datetime) -> bool:
        return self.live_armed_until is not None and self.live_armed_until > now

    def blocks(self, mode: Mode, family: str | None, now: datetime) -> str | None:
        """Why no new order may be placed now (None: trading allowed)."""
        if self.paused:
            return "paused"
        if self.mode and self.mode != mode.value:
            return "mode_changed"
        if mode is Mode.LIVE and not self.live_armed(now):
            return "live_not_armed"
        if family and family in self.families_off:
            return "family_off"
        return None


def _parse_paused(text: str) -> tuple[bool, str | None]:
    if not text:
        return False, None
    if text.startswith("{"):
        try:
            data = json.loads(text)
            return bool(data.get("paused", True)), data.get("reason")
        except (ValueError, AttributeError):
            return True, "unreadable control value"  # fail safe: an unreadable pause is a pause
    low = text.lower()
    if low in _TRUE:
        return True, None
    if low in {"0", "false", "no", "off"}:
        return False, None
    return True, "unreadable control value"


class ControlWatcher:
    """Follows the bucket and calls `on_change(state)` after every update."""

    def __init__(self, kv: KeyValue, on_change: Callable[[ControlState], Awaitable[None]]) -> None:
        self.kv = kv
        self.state = ControlState()
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        watcher = await self.kv.watchall()
        self._task = asyncio.create_task(self._run(watcher))
        await asyncio.wait_for(self.ready.wait(), 10)

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # the end of the initial values
                    self.ready.set()
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                self.state.apply(entry.key, None if deleted else entry.value)
                if self.ready.is_set():
                    try:
                        await self.on_change(self.state)
                    except Exception:
                        log.exception("control_change_failed", key=entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def set_paused(self, paused: bool, reason: str | None = None) -> None:
        value = json.dumps({"paused": paused, "reason": reason}) if reason else ("true" if paused else "false")
        await self.kv.put(ControlKey.PAUSED, value.encode())
