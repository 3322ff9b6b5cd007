"""The operators' side of the mode's `control` KV bucket: read the mode switches, set a mode, arm live.

One copy for every operator surface (the Telegram bot's `/mode` and `/family`, `kdesk mode`), so a switch
means the same wherever it is thrown. The executor follows the bucket (`services/executor/control.py`):
a `mode` other than its own blocks new orders (`mode_changed`), and a live desk trades only while
`live_armed_until` lies in the future.

Arming live is two steps on every surface: the executor answering this mode must run with
`KDESK_ALLOW_LIVE=1` (`live_refusal`), then the operator types `CONFIRM_LIVE` within `CONFIRM_WINDOW_S`
(`confirmation`); only then does `arm_live` write `mode=live` and `live_armed_until`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import nats.js.errors
from nats.js.kv import KeyValue

from libs.common.config import Mode, usd_to_ticks
from libs.common.subjects import ControlKey

CONFIRM_LIVE = "CONFIRM LIVE"
CONFIRM_WINDOW_S = 60.0
MODES = tuple(m.value for m in Mode)
LIVE_NOT_ALLOWED = ("Live needs the desk started with KDESK_MODE=live, KDESK_ALLOW_LIVE=1 and production keys "
                    "(README: Going live safely). Nothing changed.")


@dataclass(frozen=True, slots=True)
class ModeSwitch:
    """What the bucket says about the mode: the `mode` key (None: not set) and the live arming."""

    mode: str | None
    live_armed_until: datetime | None

    def live_armed(self, now: datetime) -> bool:
        """True while live orders are armed."""
        return self.live_armed_until is not None and self.live_armed_until > now

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """Plain data for a command answer or `--json`."""
        return {"control_mode": self.mode,
                "live_armed_until": self.live_armed_until.isoformat() if self.live_armed_until else None,
                "live_armed": self.live_armed(now)}


async def _text(kv: KeyValue, key: str) -> str | None:
    try:
        entry = await kv.get(key)
    except nats.js.errors.NotFoundError:  # never set, or deleted (KeyDeletedError is a NotFoundError too)
        return None
    text = (entry.value or b"").decode(errors="replace").strip()
    return text or None


async def read_mode(kv: KeyValue) -> ModeSwitch:
    """The mode switches now; an unreadable `live_armed_until` reads as not armed (as the executor reads it)."""
    armed_text = await _text(kv, ControlKey.LIVE_ARMED_UNTIL)
    try:
        armed = datetime.fromisoformat(armed_text) if armed_text else None
    except ValueError:
        armed = None
    if armed is not None and armed.tzinfo is None:
        armed = None
    return ModeSwitch(await _text(kv, ControlKey.MODE), armed)


async def set_mode(kv: KeyValue, mode: str) -> None:
    """Set a mode other than live; any live arming ends at once."""
    if mode not in MODES or mode == Mode.LIVE.value:
        raise ValueError(f"set_mode takes one of {', '.join(m for m in MODES if m != 'live')}; arm live with arm_live")
    await kv.put(ControlKey.MODE, mode.encode())
    try:
        await kv.delete(ControlKey.LIVE_ARMED_UNTIL)
    except nats.js.errors.NotFoundError:
        pass


async def arm_live(kv: KeyValue, *, now: datetime, hours: float) -> datetime:
    """`mode=live` and live orders allowed for `hours` from `now`; the end of the arming (UTC)."""
    until = (now + timedelta(hours=hours)).astimezone(UTC)
    await kv.put(ControlKey.MODE, Mode.LIVE.value.encode())
    await kv.put(ControlKey.LIVE_ARMED_UNTIL, until.isoformat().encode())
    return until


async def set_family(kv: KeyValue, family: str, enabled: bool) -> None:
    """Switch a family's new orders on or off."""
    await kv.put(ControlKey.family_enabled(family), b"true" if enabled else b"false")


def live_refusal(executor_status: dict[str, Any] | None) -> str | None:
    """Why live cannot be armed, given `cmd.executor.status` (None: the executor did not answer); None: it can."""
    if executor_status is None:
        return "executor_not_answering"
    if not executor_status.get("allow_live"):
        return "live_not_allowed"
    return None


def confirmation(text: str | None, waited_s: float) -> Literal["ok", "wrong", "late"]:
    """Judge the operator's answer to the live question: the exact phrase, within the window."""
    if (text or "").strip() != CONFIRM_LIVE:
        return "wrong"
    if waited_s > CONFIRM_WINDOW_S:
        return "late"
    return "ok"


__all__ = ["CONFIRM_LIVE", "CONFIRM_WINDOW_S", "LIVE_NOT_ALLOWED", "MODES", "ModeSwitch", "arm_live",
           "confirmation", "live_refusal", "read_mode", "set_family", "set_mode"]


async def read_llm_budget(kv: KeyValue) -> int | None:
    """The llm family's daily budget override in ticks (None: not set, or unreadable — the configured one holds)."""
    raw = await _text(kv, ControlKey.LLM_BUDGET_USD)
    if raw is None:
        return None
    try:
        return usd_to_ticks(raw)
    except ValueError:
        return None


async def set_llm_budget(kv: KeyValue, dollars: str | None) -> int | None:
    """Set (or with None clear) the llm family's daily budget for every signals replica, at once; the ticks set."""
    if dollars is None:
        await kv.delete(ControlKey.LLM_BUDGET_USD)
        return None
    ticks = usd_to_ticks(dollars)  # ValueError names what is wrong
    await kv.put(ControlKey.LLM_BUDGET_USD, dollars.strip().encode())
    return ticks
