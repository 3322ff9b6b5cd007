"""The Telegram control plane (aiogram 3): who may do what, the commands, and their audit.

Every update passes one gate (an outer middleware on the dispatcher) before any handler runs:
- it is audited in `command_audit` under `telegram:<update_id>`; an update already audited (Telegram
  redelivers what a killed bot had not confirmed) is dropped, so nothing is done twice;
- the sender's numeric user id — never the chat, so a group does not hand everyone control — must be
  in `KDESK_TELEGRAM_OPERATORS` (control) or `KDESK_TELEGRAM_VIEWERS` (read-only); an empty list
  allows nobody. Anyone else gets one short refusal (at most once a minute) and nothing else;
- the handler's answer (text, a chart, a keyboard) and its outcome are written with the audit row in
  one transaction, into the outbox; the sender delivers it. Handlers never call Telegram themselves,
  so a Telegram outage delays answers but loses none.

Answers are rendered here from `cmd.<service>.*` data; the desk's switches are the mode's `control`
KV bucket (the same keys the CLI and the executor use).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiogram import BaseMiddleware, Dispatcher, F, Router
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.filters import Command, CommandObject
from aiogram.types import BotCommand, CallbackQuery, Message, TelegramObject, Update

from libs.common import control
from libs.common.bus import Bus, CommandError
from libs.common.config import Settings
from libs.common.control import CONFIRM_LIVE, CONFIRM_WINDOW_S, MODES
from libs.common.display import usd
from libs.common.events import Heartbeat, utcnow
from libs.common.logs import get_logger, redact_text
from services.notifier import charts, render
from services.notifier.store import NotifierStore, Outgoing

log = get_logger(__name__)

REFUSAL_EVERY_S = 60.0
FAMILIES = ("weather", "btc", "llm")
DESK_SERVICES = ("feeds", "signals", "executor", "resolver")


@dataclass(frozen=True)
class Spec:
    name: str
    help: str
    operator: bool  # needs the operator role


COMMANDS: tuple[Spec, ...] = (
    Spec("status", "mode, trading state, services and feeds, today's P&L", False),
    Spec("positions", "open positions with marks", False),
    Spec("orders", "open orders", False),
    Spec("fills", "last fills: /fills [n]", False),
    Spec("balance", "cash available", False),
    Spec("pnl", "P&L by day and an equity chart: /pnl [days]", False),
    Spec("strategies", "capital, P&L, fill rate and inventory by strategy; the maker's state", False),
    Spec("signals", "recent signals and why untraded ones were not traded: /signals [n]", False),
    Spec("accuracy", "scores by family and a calibration chart: /accuracy [days]", False),
    Spec("llm", "the llm family's day: spend vs budget, last analyses", False),
    Spec("llmbudget", "set today's llm budget for every replica: /llmbudget <dollars> (or 'default')", True),
    Spec("pause", "pause trading (cancels resting orders): /pause [reason]", True),
    Spec("resume", "resume trading", True),
    Spec("flatten", "cancel everything and exit every position (asks to confirm)", True),
    Spec("family", "switch a family: /family <weather|btc|llm> on|off", True),
    Spec("mode", "show or set the mode: /mode [sim|paper|demo|live] (live asks to confirm)", True),
    Spec("help", "this list", False),
)
BY_NAME = {c.name: c for c in COMMANDS}


@dataclass
class Answer:
    """What a handler produced: the messages to send and how the command ended (for the audit)."""

    texts: list[str] = field(default_factory=list)
    photo: bytes | None = None  # sent after the texts, captioned with `caption`
    caption: str | None = None
    markup: dict[str, Any] | None = None  # inline keyboard on the last text
    outcome: str = "ok"
    detail: str | None = None


@dataclass
class Pending:
    kind: str  # live | flatten
    deadline: float
    nonce: str = ""
    command_id: str = ""


def parse(text: str) -> tuple[str, list[str]]:
    """`/Pause@kdesk_bot too fast` → ("pause", ["too", "fast"]); plain text → ("", words)."""
    words = text.strip().split()
    if not words or not words[0].startswith("/"):
        return "", words
    return words[0][1:].split("@", 1)[0].lower(), words[1:]


class NotifierBot:
    """The bot's logic; `dispatcher()` wires it into aiogram."""

    def __init__(self, settings: Settings, bus: Bus, store: NotifierStore, *, wake: Callable[[], None],
                 clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.mode = settings.mode.value
        self.bus = bus
        self.store = store
        self.wake = wake
        self.clock = clock
        self.monotonic = monotonic
        self.operators, self.viewers = settings.telegram_users()
        self.pending: dict[int, Pending] = {}  # user id -> what we wait for them to confirm
        self.refused_at: dict[int, float] = {}
        self.beats: dict[str, Heartbeat] = {}
        self.handled = 0
        self.denied = 0

    # -- access ---------------------------------------------------------------------------------

    def role(self, user_id: int | None) -> str | None:
        if user_id is None:
            return None
        if user_id in self.operators:
            return "operator"
        if user_id in self.viewers:
            return "viewer"
        return None

    def recipients(self) -> list[int]:
        """Who gets alerts and digests: operators and viewers (private chats: chat id = user id)."""
        return sorted(self.operators | self.viewers)

    def bot_commands(self) -> list[BotCommand]:
        return [BotCommand(command=c.name, description=c.help[:256]) for c in COMMANDS]

    # -- the gate -------------------------------------------------------------------------------

    async def gate(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]], event: TelegramObject,
                   data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        user = data.get("event_from_user")
        chat = data.get("event_chat")
        if event.message is not None:
            name, args = parse(event.message.text or "")
            label = f"/{name[:64]}" if name else "(text)"  # bounded: it is echoed in replies (Telegram: 4096 chars)
            needs_operator = (BY_NAME[name].operator if name in BY_NAME
                              else (not name and (event.message.text or "").strip() == CONFIRM_LIVE))
        elif event.callback_query is not None:
            label, args = "(button)", [event.callback_query.data or ""]
            needs_operator = True
        else:
            return UNHANDLED  # edits, member updates...: nothing to do
        user_id = user.id if user else None
        role = self.role(user_id)
        allowed = role == "operator" or (role == "viewer" and not needs_operator)
        command_id = f"telegram:{event.update_id}"
        fresh = await self.store.begin_command(
            command_id=command_id, actor=str(user_id), chat_id=str(chat.id) if chat else None, command=label,
            args=args[:20], authorized=allowed, received_at=self.clock())
        if not fresh:
            log.info("update_already_handled", command_id=command_id)
            return UNHANDLED
        chat_id = chat.id if chat else user_id
        if not allowed:
            self.denied += 1
            log.warning("command_denied", user_id=user_id, chat_id=chat_id, command=label, role=role)
            await self._refuse(user_id, chat_id, role, label, event.callback_query)
            return UNHANDLED
        data["command_id"] = command_id
        data["role"] = role
        try:
            answer = await handler(event, data)
        except CommandError as e:
            answer = Answer([render.lines(self.mode, f"{label}: {e.code}", render.esc(str(e)))], outcome="error",
                            detail=f"{e.code}: {e}")
        except Exception as e:
            log.exception("command_failed", command=label)
            text = redact_text(str(e)) or type(e).__name__
            answer = Answer([render.lines(self.mode, f"{label} failed", render.esc(text))], outcome="error",
                            detail=text)
        if answer is UNHANDLED or answer is None:
            answer = Answer([render.lines(self.mode, f"unknown command {label}", "/help lists what I understand")],
                            outcome="error", detail="unknown command")
        self.handled += 1
        await self.store.finish_command(command_id, answer.outcome, answer.detail or _first_line(answer),
                                        self._messages(chat_id, answer, command_id))
        self.wake()
        return answer

    async def _refuse(self, user_id: int | None, chat_id: int | None, role: str | None, label: str,
                      cb: CallbackQuery | None) -> None:
        if cb is not None:  # a button: the refusal is the button's own pop-up, seen by the presser only
            with contextlib.suppress(Exception):
                await cb.answer("Not authorized", show_alert=True)
            return
        if user_id is None or chat_id is None:
            return
        now = self.monotonic()
        if now - self.refused_at.get(user_id, -1e9) < REFUSAL_EVERY_S:
            return
        self.refused_at[user_id] = now
        text = (render.lines(self.mode, f"{label} needs an operator", "Viewers can look, not steer.")
                if role == "viewer" else render.refusal())
        await self.store.enqueue([Outgoing(chat_id=chat_id, kind="notice", body=text)])
        self.wake()

    def _messages(self, chat_id: int | None, a: Answer, command_id: str) -> list[Outgoing]:
        if chat_id is None:
            return []
        out = [Outgoing(chat_id=chat_id, kind="reply", body=t, command_id=command_id,
                        reply_markup=a.markup if i == len(a.texts) - 1 else None) for i, t in enumerate(a.texts)]
        if a.photo is not None:
            out.append(Outgoing(chat_id=chat_id, kind="reply", body=a.caption, photo=a.photo, command_id=command_id))
        return out

    # -- wiring ---------------------------------------------------------------------------------

    def dispatcher(self) -> Dispatcher:
        dp = Dispatcher()
        dp.update.outer_middleware(_Gate(self))
        r = Router(name="kdesk")
        views: dict[str, Callable[[CommandObject], Awaitable[Answer]]] = {
            "status": self.cmd_status, "positions": self.cmd_positions, "orders": self.cmd_orders,
            "fills": self.cmd_fills, "balance": self.cmd_balance, "pnl": self.cmd_pnl, "signals": self.cmd_signals,
            "accuracy": self.cmd_accuracy, "pause": self.cmd_pause, "resume": self.cmd_resume,
            "family": self.cmd_family, "help": self.cmd_help, "start": self.cmd_help, "llm": self.cmd_llm,
            "llmbudget": self.cmd_llmbudget, "strategies": self.cmd_strategies,
        }
        for name, fn in views.items():
            r.message.register(_view(fn), Command(name, ignore_mention=True))
        r.message.register(self.on_mode, Command("mode", ignore_mention=True))
        r.message.register(self.on_flatten, Command("flatten", ignore_mention=True))
        r.message.register(self.on_text, F.text)
        r.callback_query.register(self.on_button, F.data)
        dp.include_router(r)
        return dp

    # -- reading the desk -----------------------------------------------------------------------

    async def ask(self, service: str, verb: str, payload: dict[str, Any] | None = None) -> Any:
        return await self.bus.request(service, verb, payload or {}, timeout=10.0)

    def on_beat(self, hb: Heartbeat) -> None:
        self.beats[f"{hb.service}/{hb.instance}"] = hb

    def live_beats(self) -> tuple[list[Heartbeat], list[str]]:
        """Heartbeats heard recently, and the desk services with none."""
        horizon = self.clock() - timedelta(seconds=3 * self.settings.health_interval_s + 2)
        beats = [b for b in self.beats.values() if b.ts_event >= horizon]
        heard = {b.service for b in beats}
        return beats, [s for s in DESK_SERVICES if s not in heard]

    async def cmd_status(self, _: CommandObject) -> Answer:
        errors: dict[str, str] = {}
        ex = pnl = None
        try:
            ex = await self.ask("executor", "status")
            pnl = await self.ask("executor", "pnl", {"days": 1})
        except CommandError as e:
            errors["executor"] = str(e)  # status without P&L beats no status
        beats, silent = self.live_beats()
        return Answer([render.status(self.mode, ex, pnl, beats, silent, errors)],
                      detail="executor not answering" if ex is None else None)

    async def cmd_positions(self, _: CommandObject) -> Answer:
        return Answer([render.positions(self.mode, await self.ask("executor", "positions"))])

    async def cmd_orders(self, _: CommandObject) -> Answer:
        return Answer([render.orders(self.mode, await self.ask("executor", "orders", {"open": True}))])

    async def cmd_fills(self, c: CommandObject) -> Answer:
        n = _int_arg(c, 10, 1, 50)
        return Answer([render.fills(self.mode, await self.ask("executor", "fills", {"limit": n}))])

    async def cmd_balance(self, _: CommandObject) -> Answer:
        return Answer([render.balance(self.mode, await self.ask("executor", "balance"))])

    async def cmd_pnl(self, c: CommandObject) -> Answer:
        days = _int_arg(c, 7, 1, 365)
        data = await self.ask("executor", "pnl", {"days": days})
        png = await asyncio.to_thread(charts.equity, self.mode, data.get("equity") or [])
        return Answer([render.pnl(self.mode, data)], photo=png, caption=render.head(self.mode, f"equity, {days} d"))

    async def cmd_strategies(self, _: CommandObject) -> Answer:
        return Answer([render.strategies(self.mode, await self.ask("executor", "strategies"))])

    async def cmd_signals(self, c: CommandObject) -> Answer:
        n = _int_arg(c, 10, 1, 30)
        rows = await self.ask("signals", "recent", {"limit": n})
        decided = await self.ask("executor", "decisions", {"signal_ids": [r["signal_id"] for r in rows]})
        for r in rows:
            d = decided.get(r["signal_id"]) or {}
            r["order_status"], r["reason"] = d.get("status"), d.get("reason") or r.get("reason")
        return Answer([render.signals(self.mode, rows)])

    async def cmd_accuracy(self, c: CommandObject) -> Answer:
        days = _int_arg(c, 30, 1, 365)
        data = await self.ask("resolver", "accuracy", {"days": days})
        fams = {f: s.get("bins") or [] for f, s in (data.get("families") or {}).items()}
        png = await asyncio.to_thread(charts.calibration, self.mode, fams)
        return Answer([render.accuracy(self.mode, data)], photo=png,
                      caption=render.head(self.mode, f"calibration, {days} d"))

    async def cmd_llm(self, _: CommandObject) -> Answer:
        return Answer([render.llm(self.mode, await self.ask("signals", "llm", {"limit": 5}))])

    async def cmd_llmbudget(self, c: CommandObject) -> Answer:
        arg = (c.args or "").strip().lstrip("$")
        if not arg:
            return Answer([render.lines(self.mode, "usage: /llmbudget <dollars> (or 'default')")], outcome="error",
                          detail="no amount")
        try:
            ticks = await control.set_llm_budget(await self.bus.control(), None if arg.lower() == "default" else arg)
        except ValueError as e:
            return Answer([render.lines(self.mode, "usage: /llmbudget <dollars> (or 'default')",
                                        render.esc(str(e)[:200]))],
                          outcome="error", detail="bad amount")
        said = "back to the configured default" if ticks is None else f"set to {usd(ticks)} a day"
        return Answer([render.lines(self.mode, f"llm budget {said}", "every signals replica, from its next analysis")],
                      detail=said)

    async def cmd_help(self, _: CommandObject) -> Answer:
        rows = [f"/{c.name} — {render.esc(c.help)}" + (" <i>(operators)</i>" if c.operator else "") for c in COMMANDS]
        return Answer([render.lines(self.mode, "commands", *rows)])

    # -- steering the desk ----------------------------------------------------------------------

    async def cmd_pause(self, c: CommandObject) -> Answer:
        reason = (c.args or "").strip()[:200] or "operator (Telegram)"
        data = await self.ask("executor", "pause", {"reason": reason})
        return Answer([render.control(self.mode, "pause", data)], detail=f"paused: {reason}")

    async def cmd_resume(self, _: CommandObject) -> Answer:
        return Answer([render.control(self.mode, "resume", await self.ask("executor", "resume"))])

    async def cmd_family(self, c: CommandObject) -> Answer:
        words = (c.args or "").lower().split()
        if len(words) != 2 or words[0] not in FAMILIES or words[1] not in ("on", "off"):
            return Answer([render.lines(self.mode, "usage: /family <weather|btc|llm> on|off")], outcome="error",
                          detail="bad arguments")
        family, state = words
        await control.set_family(await self.bus.control(), family, state == "on")
        return Answer([render.lines(self.mode, f"family {family} switched {state.upper()}",
                                    "new orders of this family are blocked" if state == "off" else "")])

    async def on_flatten(self, message: Message, command_id: str) -> Answer:
        user = message.from_user
        assert user is not None
        nonce = secrets.token_hex(4)
        self.pending[user.id] = Pending("flatten", self.monotonic() + CONFIRM_WINDOW_S, nonce, command_id)
        markup = {"inline_keyboard": [[{"text": "Flatten now", "callback_data": f"flatten:{nonce}:yes"},
                                       {"text": "Cancel", "callback_data": f"flatten:{nonce}:no"}]]}
        return Answer([render.lines(self.mode, "flatten?", "Cancels every resting order and exits every position "
                                    f"at the best bid. Press within {CONFIRM_WINDOW_S:.0f} s.")],
                      markup=markup, outcome="awaiting_confirmation")

    async def on_button(self, cb: CallbackQuery) -> Answer:
        with contextlib.suppress(Exception):  # the spinner on the button; not worth failing the command over
            await cb.answer()
        parts = (cb.data or "").split(":")
        p = self.pending.get(cb.from_user.id)
        if len(parts) != 3 or parts[0] != "flatten" or p is None or p.kind != "flatten" or p.nonce != parts[1]:
            return Answer([render.lines(self.mode, "that button is no longer valid; nothing done")],
                          outcome="expired", detail="stale button")
        del self.pending[cb.from_user.id]
        if parts[2] != "yes":
            return Answer([render.lines(self.mode, "flatten cancelled; nothing done")], detail="cancelled")
        if self.monotonic() > p.deadline:
            return Answer([render.lines(self.mode, "flatten not confirmed in time; nothing done")],
                          outcome="expired", detail="confirmation expired")
        data = await self.ask("executor", "flatten")
        return Answer([render.control(self.mode, "flatten", data)], detail="flattened")

    async def on_mode(self, message: Message, command: CommandObject, command_id: str) -> Answer:
        want = (command.args or "").strip().lower()
        kv = await self.bus.control()
        if not want:
            return Answer([await self._mode_line(kv)])
        if want not in MODES:
            return Answer([render.lines(self.mode, f"no such mode {want[:40]!r}", "modes: " + ", ".join(MODES))],
                          outcome="error", detail="bad mode")
        if want == "live":
            try:
                st = await self.ask("executor", "status")
            except CommandError as e:
                return Answer([render.lines(self.mode, "live refused: the executor is not answering",
                                            render.esc(str(e)))], outcome="error", detail="executor not answering")
            if control.live_refusal(st) is not None:
                return Answer([render.lines(self.mode, "live refused: this desk does not allow live trading",
                                            control.LIVE_NOT_ALLOWED)], outcome="error", detail="live not allowed")
            assert message.from_user is not None
            self.pending[message.from_user.id] = Pending("live", self.monotonic() + CONFIRM_WINDOW_S,
                                                         command_id=command_id)
            return Answer([render.lines(self.mode, "arm LIVE trading?",
                                        f"Real money. Reply <code>{CONFIRM_LIVE}</code> within "
                                        f"{CONFIRM_WINDOW_S:.0f} s to arm live orders for "
                                        f"{self.settings.live_arm_hours:g} h. Anything else cancels.")],
                          outcome="awaiting_confirmation")
        await control.set_mode(kv, want)
        if want == self.mode:
            note = "orders allowed in this mode" + ("" if want != "live" else "; live disarmed")
        else:
            note = (f"This {self.mode.upper()} desk stops placing orders (mode_changed). To trade in "
                    f"{want.upper()}, restart the desk with KDESK_MODE={want}.")
        return Answer([render.lines(self.mode, f"mode set to {want.upper()}", note)], detail=f"mode {want}")

    async def _mode_line(self, kv: Any) -> str:
        sw = await control.read_mode(kv)
        armed = sw.live_armed_until
        return render.lines(self.mode, f"desk mode {self.mode.upper()}",
                            f"control mode: {sw.mode or '(not set)'}",
                            f"live armed until {armed.isoformat()}" if armed else "live not armed")

    async def on_text(self, message: Message, command_id: str) -> Answer:
        """Plain text: the live confirmation, or nothing we understand."""
        text = (message.text or "").strip()
        user = message.from_user
        p = self.pending.get(user.id) if user else None
        if p is not None and p.kind == "live":
            del self.pending[user.id]  # type: ignore[union-attr]
            verdict = control.confirmation(text, self.monotonic() - (p.deadline - CONFIRM_WINDOW_S))
            if verdict == "wrong":
                return Answer([render.lines(self.mode, "live not confirmed; nothing changed")],
                              outcome="error", detail="wrong confirmation")
            if verdict == "late":
                return Answer([render.lines(self.mode, "confirmation came too late; nothing changed",
                                            "Send /mode live again.")], outcome="expired", detail="too late")
            until = await control.arm_live(await self.bus.control(), now=self.clock(),
                                           hours=self.settings.live_arm_hours)
            log.warning("live_armed", user_id=user.id if user else None, until=until.isoformat())
            return Answer([render.lines(self.mode, "LIVE armed", f"live orders allowed until "
                                        f"{until:%Y-%m-%d %H:%M} UTC; /mode sim disarms")],
                          detail=f"live armed until {until.isoformat()}")
        if text.startswith("/"):
            return UNHANDLED  # type: ignore[return-value]  # an unknown command: the gate says so
        return Answer([render.lines(self.mode, "I understand commands only", "/help lists them")],
                      outcome="error", detail="not a command")


class _Gate(BaseMiddleware):
    def __init__(self, bot: NotifierBot) -> None:
        self.bot = bot

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        return await self.bot.gate(handler, event, data)


def _view(fn: Callable[[CommandObject], Awaitable[Answer]]) -> Callable[..., Awaitable[Answer]]:
    async def handler(message: Message, command: CommandObject) -> Answer:
        return await fn(command)
    return handler


def _int_arg(c: CommandObject, default: int, lo: int, hi: int) -> int:
    try:
        n = int((c.args or "").split()[0]) if c.args else default
    except ValueError:
        raise CommandError("bad_request", f"expected a whole number between {lo} and {hi}") from None
    if not lo <= n <= hi:
        raise CommandError("bad_request", f"expected a whole number between {lo} and {hi}")
    return n


def _first_line(a: Answer) -> str | None:
    return a.texts[0].split("\n", 1)[0][:200] if a.texts else None


__all__ = ["COMMANDS", "CONFIRM_LIVE", "Answer", "NotifierBot", "parse"]
