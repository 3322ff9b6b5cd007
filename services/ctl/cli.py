"""`kdesk`: the operator CLI (up, run, migrate, health, provision, desk, resolver)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libs.common.config import ConfigError, Settings, load_settings
from libs.common.logs import configure_logging, redact_text

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as e:
        print(f"kdesk: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def _client_settings() -> Settings:
    """Settings of a client command: the environment, else the desk `kdesk up` runs (its `var/run.json`)."""
    import os

    from services.ctl import runfile

    s = _settings()
    if s.nats_url:
        return s
    info = runfile.read(s.var_dir)
    if info is None:
        print(f"kdesk: no desk is running here (no live {s.var_dir / runfile.NAME}); start one with `make run`, "
              "or set KDESK_NATS_URL", file=sys.stderr)
        sys.exit(EXIT_FAIL)
    over: dict[str, object] = {"nats_url": info.nats_url}
    if "KDESK_MODE" not in os.environ:
        over["mode"] = info.mode
    if info.database_url and not s.database_url_value():
        over["database_url"] = info.database_url
    try:
        return load_settings(**over)
    except ConfigError as e:
        print(f"kdesk: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def _need(value: str | None, var: str) -> str:
    if not value:
        print(f"kdesk: {var} is not set (or use `kdesk up`, which starts embedded servers)", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    return value


# --- migrate -----------------------------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply database migrations up to head."""
    from libs.common.db.migrate import current_revision, head_revision, upgrade_to_head

    s = _settings()
    url = _need(s.database_url_value(), "KDESK_DATABASE_URL")
    try:
        upgrade_to_head(url)
    except Exception as e:
        print(f"kdesk migrate: failed: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    print(f"kdesk migrate: database at revision {current_revision(url)} (head {head_revision()})")
    return EXIT_OK


# --- provision ---------------------------------------------------------------------------------

async def _provision(url: str, s: Settings) -> None:
    from libs.common.bus import Bus

    bus = await Bus.connect(url, service="ctl", mode=s.mode, initial_attempts=3)
    try:
        await bus.provision(replicas=s.stream_replicas)
    finally:
        await bus.close()


def cmd_provision(args: argparse.Namespace) -> int:
    """Create or update the JetStream streams and the control KV bucket."""
    s = _settings()
    url = _need(s.nats_url, "KDESK_NATS_URL")
    try:
        asyncio.run(_provision(url, s))
    except Exception as e:
        print(f"kdesk provision: failed: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    print("kdesk provision: streams and control bucket ready")
    return EXIT_OK


# --- run ---------------------------------------------------------------------------------------

def runnable_services() -> tuple[str, ...]:
    """The services `kdesk run` knows: every `services/<name>/` with a `__main__.py`, in start order, but ctl."""
    from services.ctl.supervisor import SERVICE_ORDER, SERVICES_DIR

    found = sorted(p.parent.name for p in SERVICES_DIR.glob("*/__main__.py") if p.parent.name != "ctl")
    return tuple([n for n in SERVICE_ORDER if n in found] + [n for n in found if n not in SERVICE_ORDER])


def cmd_run(args: argparse.Namespace) -> int:
    """Run one service in this process, exactly as `python -m services.<name>` does (the image's commands)."""
    import runpy

    names = runnable_services()
    if args.service not in names:
        print(f"kdesk run: no service {args.service!r} (one of: {', '.join(names)})", file=sys.stderr)
        return EXIT_CONFIG
    if args.service == "sim":
        # Like `kdesk up`: the desk's API key pair under the var directory (a volume the desk shares under
        # compose), its public half where the simulator registers keys. Needs a fixed KDESK_SIM_BASE_PORT.
        # The simulator is what makes the file KALSHI_SIM_PRIVATE_KEY_PATH names: make it before the settings
        # are read, which refuse a key file that does not exist (as on a fresh compose volume).
        import os

        if os.environ.get("KALSHI_SIM_PRIVATE_KEY_PATH"):
            new_private_key(Path(os.environ["KALSHI_SIM_PRIVATE_KEY_PATH"]))
        s = _settings()
        if s.sim_base_port:
            sim_environment(s, Path(s.var_dir))
    module = f"services.{args.service}"
    # The service parses its own command line (the simulator has options): hand it what follows the name.
    sys.argv = [f"python -m {module}", *args.args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_FAIL)
    return EXIT_OK


# --- health ------------------------------------------------------------------------------------

async def _health(s: Settings, service: str, instance: str | None, wait_s: float) -> tuple[bool, str]:
    from libs.common.health import check

    bus = await _bus_for(s)
    try:
        return await check(bus, service, instance, wait_s=wait_s)
    finally:
        await bus.close()


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the service's heartbeat says healthy, 1 otherwise (compose healthchecks)."""
    s = _client_settings()
    try:
        ok, text = asyncio.run(_health(s, args.service, args.instance, args.wait))
    except Exception as e:
        print(f"{args.service}: unhealthy: cannot reach NATS: {redact_text(str(e))}")
        return EXIT_FAIL
    print(("healthy: " if ok else "unhealthy: ") + text)
    return EXIT_OK if ok else EXIT_FAIL


# --- desk (executor commands) -------------------------------------------------------------------

MODE_CHOICES = ("sim", "paper", "demo", "live")
DESK_VERBS = ("status", "positions", "orders", "fills", "balance", "strategies", "pause", "resume", "flatten",
              "reconcile")


async def _ask(s: Settings, service: str, verb: str, payload: dict[str, object]) -> object:
    bus = await _bus_for(s)
    try:
        return await bus.request(service, verb, payload, timeout=60.0 if verb == "backfill" else 15.0)
    finally:
        await bus.close()


def _command(service: str, label: str, verb: str, payload: dict[str, object],
             show: Callable[[str, Any], None] | None = None) -> int:
    """Ask `service` (any instance of this mode); print the answer with `show`, or as JSON."""
    import json

    from libs.common.bus import CommandError

    s = _client_settings()
    try:
        data = asyncio.run(_ask(s, service, verb, payload))
    except CommandError as e:
        print(f"kdesk {label}: {e.code}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:
        print(f"kdesk {label}: cannot reach NATS: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    if show is None:
        print(json.dumps(data, indent=2, default=str))
    else:
        show(s.mode.value, data)
    return EXIT_OK


# --- top-level views (rendered; --json for scripts) ----------------------------------------------

def cmd_view(args: argparse.Namespace) -> int:
    """`kdesk status|positions|orders|fills|balance|strategies|accuracy`: the answer rendered, or JSON (--json)."""
    from services.ctl import render

    if args.view == "status":
        return _status(args.json)
    payload: dict[str, object] = {}
    if args.view in ("orders", "fills"):
        payload["limit"] = args.limit
        if args.view == "orders" and args.open:
            payload["open"] = True
    if args.view == "accuracy":
        payload["days"] = args.days
        if args.family:
            payload["family"] = args.family
    service, show = {"positions": ("executor", render.positions), "orders": ("executor", render.orders),
                     "fills": ("executor", render.fills), "balance": ("executor", render.balance),
                     "strategies": ("executor", render.strategies),
                     "accuracy": ("resolver", render.accuracy)}[args.view]
    return _command(service, args.view, args.view, payload, None if args.json else show)


def cmd_pnl(args: argparse.Namespace) -> int:
    """`kdesk pnl`: the equity curve, P&L per UTC day, realized / unrealized / fees by family (or --json)."""
    from services.ctl import render

    return _command("executor", "pnl", "pnl", {"days": args.days}, None if args.json else render.pnl)


async def _bus_for(s: Settings) -> Any:
    from libs.common.bus import Bus

    return await Bus.connect(_need(s.nats_url, "KDESK_NATS_URL"), service="ctl", mode=s.mode, initial_attempts=1,
                             max_reconnect_attempts=0)


async def _last_book(s: Settings, ticker: str) -> Any:
    """The last `md.book` value of a market (JetStream keeps the last one per market)."""
    import nats.js.errors

    from libs.common import subjects
    from libs.common.events import BookUpdate

    bus = await _bus_for(s)
    try:
        msg = await bus.js.get_last_msg(bus.stream("MD_BOOKS"),
                                        bus.wire(subjects.md_book(subjects.series_of(ticker), ticker)))
        return BookUpdate.model_validate_json(msg.data)
    except nats.js.errors.NotFoundError:
        return None
    finally:
        await bus.close()


async def _last_alerts(s: Settings, n: int) -> list[Any]:
    """The last `n` alerts of this mode, oldest first."""
    from nats.js import api

    from libs.common.events import Alert

    bus = await _bus_for(s)
    try:
        stream = bus.stream("OPS")
        info = await bus.js.stream_info(stream)
        if not info.state.messages:
            return []
        start = max(info.state.first_seq, info.state.last_seq - 20 * n)
        sub = await bus.js.subscribe(bus.wire("ops.alert.>"), ordered_consumer=True, config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start))
        out: list[Any] = []
        try:
            while True:
                msg = await sub.next_msg(timeout=0.5)
                try:
                    out.append(Alert.model_validate_json(msg.data))
                except ValueError:
                    continue  # dead letters share the stream
        except TimeoutError:
            pass
        finally:
            await sub.unsubscribe()
        return out[-n:]
    finally:
        await bus.close()


async def _signals(s: Settings, ticker: str | None, last: int) -> list[dict[str, Any]]:
    """Recent signals of this mode with what the executor decided on each (history: read from PostgreSQL)."""
    from sqlalchemy import select

    from libs.common.db import Order, create_engine, session_factory
    from libs.common.db import signals as tables

    engine = create_engine(_need(s.database_url_value(), "KDESK_DATABASE_URL"))
    try:
        async with session_factory(engine)() as db:
            q = select(tables.Signal).where(tables.Signal.mode == s.mode.value)
            if ticker:
                q = q.where(tables.Signal.ticker == ticker)
            sigs = (await db.scalars(q.order_by(tables.Signal.created_at.desc()).limit(last))).all()
            decided = {o.signal_id: o for o in (await db.scalars(select(Order).where(
                Order.mode == s.mode.value, Order.signal_id.in_([x.signal_id for x in sigs])))).all()}
    finally:
        await engine.dispose()
    out = []
    for x in reversed(sigs):
        o = decided.get(x.signal_id)
        out.append({"signal_id": x.signal_id, "created_at": x.created_at, "ticker": x.ticker, "action": x.action,
                    "model_prob": x.model_prob, "market_prob": x.market_prob, "edge_maker_ticks": x.edge_maker_ticks,
                    "order_status": o.status if o else None, "reason": o.reason if o else None})
    return out


def cmd_signals(args: argparse.Namespace) -> int:
    """The last signals and what became of each (sent, or the reason it was declined)."""
    import json

    from services.ctl import render

    s = _client_settings()
    try:
        rows = asyncio.run(_signals(s, args.ticker.upper() if args.ticker else None, args.last))
    except Exception as e:
        print(f"kdesk signals: cannot read the database: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        render.signals(s.mode.value, rows)
    return EXIT_OK


def cmd_orderbook(args: argparse.Namespace) -> int:
    """Both sides of a market's last book as a ladder, with its age."""
    from services.ctl import render

    s = _client_settings()
    try:
        book = asyncio.run(_last_book(s, args.ticker.upper()))
    except Exception as e:
        print(f"kdesk orderbook: cannot reach NATS: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    if book is None:
        print(f"kdesk orderbook: no book of {args.ticker.upper()} in {s.mode.value} mode (is feeds following it?)",
              file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(book.model_dump_json(indent=2))
    else:
        render.orderbook(s.mode.value, book, depth=args.depth)
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace) -> int:
    """The last alerts of this mode."""
    import json

    from services.ctl import render

    s = _client_settings()
    try:
        alerts = asyncio.run(_last_alerts(s, args.last))
    except Exception as e:
        print(f"kdesk alerts: cannot reach NATS: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps([a.model_dump(mode="json") for a in alerts], indent=2))
    else:
        render.alerts(s.mode.value, alerts)
    return EXIT_OK


def cmd_forecast(args: argparse.Namespace) -> int:
    """What the weather model sees for CITY on DATE: members by model, brackets beside the market, observed max."""
    from datetime import date

    from services.ctl import render

    payload: dict[str, object] = {"city": args.city}
    if args.date:
        try:
            payload["date"] = date.fromisoformat(args.date).isoformat()
        except ValueError:
            print(f"kdesk forecast: DATE must be YYYY-MM-DD (a climate day), got {args.date!r}", file=sys.stderr)
            return EXIT_CONFIG
    return _command("signals", "forecast", "forecast", payload, None if args.json else render.forecast)


def cmd_llm(args: argparse.Namespace) -> int:
    """The llm family's day (spend, budget, provider, last analyses); `--budget` changes the day's budget for every
    signals replica at once (the control bucket), `--default-budget` goes back to KDESK_LLM_DAILY_BUDGET_USD."""
    from libs.common import control
    from services.ctl import render

    if args.budget is not None or args.default_budget:
        s = _client_settings()

        async def put() -> int | None:
            bus = await _bus_for(s)
            try:
                return await control.set_llm_budget(await bus.control(), None if args.default_budget else args.budget)
            finally:
                await bus.close()

        try:
            ticks = asyncio.run(put())
        except ValueError as e:
            print(f"kdesk llm: --budget: {e}", file=sys.stderr)
            return EXIT_CONFIG
        except Exception as e:
            print(f"kdesk llm: cannot reach NATS: {redact_text(str(e))}", file=sys.stderr)
            return EXIT_FAIL
        print(f"kdesk · mode {s.mode.value.upper()} · llm budget "
              + ("back to the configured default" if ticks is None else f"set to ${ticks / 10_000:,.2f} a day")
              + " (every signals replica, from its next analysis)", file=sys.stderr)
    return _command("signals", "llm", "llm", {"limit": args.last}, None if args.json else render.llm)


def cmd_ws_status(args: argparse.Namespace) -> int:
    """Each WebSocket connection of feeds: venue, state, last message age, reconnects."""
    from services.ctl import render

    return _command("feeds", "ws-status", "ws_status", {}, None if args.json else render.ws_status)


async def _mode_state(s: Settings, bus: Any) -> dict[str, Any]:
    """The desk's mode, the control bucket's mode switches and the executor's view of them (None: not answering)."""
    from libs.common import control
    from libs.common.bus import CommandError
    from libs.common.events import utcnow

    sw = await control.read_mode(await bus.control())
    try:
        st = await bus.request("executor", "status", timeout=5.0)
        ex: dict[str, Any] | None = {"allow_live": bool(st.get("allow_live")), "blocked": st.get("blocked"),
                                     "paused": st.get("paused")}
    except CommandError:
        ex = None
    return {"desk_mode": s.mode.value, **sw.as_dict(utcnow()), "executor": ex}


def _typed_within(prompt: str, seconds: float) -> str | None:
    """What the operator types (one line) within `seconds`, or None; the prompt goes to stderr, so that
    stdout stays the command's answer (`--json`)."""
    import select

    sys.stderr.write(prompt)
    sys.stderr.flush()
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    return sys.stdin.readline().rstrip("\n") if ready else None


def cmd_mode(args: argparse.Namespace) -> int:
    """Show the mode, or switch it; live needs the executor's KDESK_ALLOW_LIVE=1 and CONFIRM LIVE within 60 s.

    There is deliberately no flag that skips the typed phrase: a script that arms live must type it too
    (`echo 'CONFIRM LIVE' | kdesk mode live`), the same two steps as Telegram's `/mode live`.
    """
    import json
    import time

    from libs.common import control
    from libs.common.events import utcnow
    from services.ctl import render

    s = _client_settings()
    want = (args.mode or "").lower()

    def show(data: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            render.mode_view(s.mode.value, data)

    async def run(step: Callable[[Any], Any] | None) -> dict[str, Any]:
        bus = await _bus_for(s)
        try:
            changed = await step(await bus.control()) if step is not None else None
            return await _mode_state(s, bus) | ({"changed": changed} if changed else {})
        finally:
            await bus.close()

    def fail(text: str) -> int:
        print(f"kdesk mode: {text}", file=sys.stderr)
        return EXIT_FAIL

    try:
        if not want:
            show(asyncio.run(run(None)))
            return EXIT_OK
        if want != "live":
            async def switch(kv: Any) -> str:
                await control.set_mode(kv, want)
                if want == s.mode.value:
                    return f"mode set to {want.upper()}: orders allowed in this mode; live disarmed"
                return (f"mode set to {want.upper()}: this {s.mode.value.upper()} desk stops placing orders "
                        f"(mode_changed); to trade in {want.upper()}, restart the desk with KDESK_MODE={want}")

            show(asyncio.run(run(switch)))
            return EXIT_OK
        state = asyncio.run(run(None))
        refused = control.live_refusal(state["executor"])
        if refused == "executor_not_answering":
            return fail("live refused: the executor is not answering (is the desk running?); nothing changed")
        if refused is not None:
            return fail(f"live refused: this desk does not allow live trading. {control.LIVE_NOT_ALLOWED}")
        asked = time.monotonic()
        typed = _typed_within(f"Arm LIVE trading with real money for {s.live_arm_hours:g} h? Type "
                              f"{control.CONFIRM_LIVE} within {control.CONFIRM_WINDOW_S:.0f} s: ",
                              control.CONFIRM_WINDOW_S)
        verdict = control.confirmation(typed, time.monotonic() - asked) if typed is not None else "late"
        if verdict == "wrong":
            return fail("live not confirmed; nothing changed")
        if verdict == "late":
            return fail(f"no confirmation within {control.CONFIRM_WINDOW_S:.0f} s; nothing changed")

        async def arm(kv: Any) -> str:
            until = await control.arm_live(kv, now=utcnow(), hours=s.live_arm_hours)
            return f"LIVE armed: live orders allowed until {until:%Y-%m-%d %H:%M} UTC; `kdesk mode sim` disarms"

        show(asyncio.run(run(arm)))
        return EXIT_OK
    except Exception as e:
        return fail(f"cannot reach NATS or the control bucket: {redact_text(str(e)) or type(e).__name__}")


def cmd_control(args: argparse.Namespace) -> int:
    """pause / resume / flatten (flatten asks to confirm unless --yes)."""
    if args.verb == "flatten" and not args.yes:
        try:
            answer = input("flatten cancels every resting order and exits every position at the best bid. "
                           "Type FLATTEN to go on: ")
        except EOFError:  # no terminal (stdin closed or an empty pipe): not confirmed
            answer = ""
        if answer.strip() != "FLATTEN":
            print("kdesk flatten: not confirmed; nothing done", file=sys.stderr)
            return EXIT_FAIL
    from services.ctl import render

    payload: dict[str, object] = {"reason": args.reason} if getattr(args, "reason", None) else {}
    return _command("executor", args.verb, args.verb, payload, None if args.json else render.control)


def _status(as_json: bool) -> int:
    import json
    import time

    from libs.common import subjects
    from libs.common.events import Heartbeat
    from services.ctl import render
    from services.ctl.supervisor import discover

    s = _client_settings()
    # The simulator is the exchange's stand-in, not a desk service: it sends no heartbeat.
    expected = {spec.name for spec in discover(mode=s.mode.value)[0]} - {"sim"}

    async def ask() -> tuple[dict[str, Any], dict[str, str], dict[str, Heartbeat]]:
        bus = await _bus_for(s)
        beats: dict[str, Heartbeat] = {}
        all_seen = asyncio.Event()

        async def on_beat(hb: Heartbeat) -> None:
            beats[f"{hb.service}/{hb.instance}"] = hb
            if {b.service for b in beats.values()} >= expected:
                all_seen.set()

        sub = await bus.subscribe(subjects.ops_health_all(), Heartbeat, on_beat)
        answers: dict[str, Any] = {}
        errors: dict[str, str] = {}
        started = time.monotonic()
        try:
            for service in ("executor", "resolver"):
                try:
                    answers[service] = await bus.request(service, "status", timeout=5.0)
                except Exception as e:
                    errors[service] = str(e)
            # Heartbeats come every KDESK_HEALTH_INTERVAL_S: wait for one of each service, at most that long.
            left = s.health_interval_s + 1 - (time.monotonic() - started)
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_seen.wait(), left)
        finally:
            await sub.unsubscribe()
            await bus.close()
        return answers, errors, beats

    try:
        answers, errors, beats = asyncio.run(ask())
    except Exception as e:
        print(f"kdesk status: cannot reach NATS: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL
    for name in sorted(expected - {b.service for b in beats.values()}):
        errors[f"health:{name}"] = f"no heartbeat within {s.health_interval_s + 1:.0f} s"
    health = {k: b.model_dump(mode="json") for k, b in sorted(beats.items())}
    if as_json:
        print(json.dumps({"mode": s.mode.value, **answers, "health": health, "errors": errors}, indent=2,
                         default=str))
    else:
        render.status(s.mode.value, answers.get("executor"), answers.get("resolver"), errors)
        render.health(list(beats.values()), [k.split(":", 1)[1] for k in errors if k.startswith("health:")])
    return EXIT_OK if "executor" in answers else EXIT_FAIL


def cmd_desk(args: argparse.Namespace) -> int:
    """Ask the executor."""
    payload: dict[str, object] = {}
    if args.reason:
        payload["reason"] = args.reason
    if args.open:
        payload["open"] = True
    if args.limit:
        payload["limit"] = args.limit
    return _command("executor", "desk", args.verb, payload)


RESOLVER_VERBS = ("status", "accuracy", "calibration", "backfill")


def cmd_resolver(args: argparse.Namespace) -> int:
    """Ask the resolver: scores by family, calibration bins, or a backfill of a window."""
    payload: dict[str, object] = {"days": args.days}
    if args.family:
        payload["family"] = args.family
    if args.bins:
        payload["bins"] = args.bins
    return _command("resolver", "resolver", args.verb, payload)


# --- chat --------------------------------------------------------------------------------------

def cmd_chat(args: argparse.Namespace) -> int:
    """A terminal chat with the bot as an operator, through the simulator's fake Telegram (sim mode)."""
    from services.ctl import runfile
    from services.ctl.chat import run_chat

    s = _settings()
    info = runfile.read(s.var_dir)
    if info is None:
        print(f"kdesk chat: no desk is running here (no live {s.var_dir / runfile.NAME}); start one with `make run`",
              file=sys.stderr)
        return EXIT_FAIL
    if not info.telegram_fake_url or info.chat_user_id is None:
        print(f"kdesk chat: the desk runs in {info.mode} mode, whose bot talks to the real Telegram: open your chat "
              "with the bot in the Telegram app (kdesk chat is for sim mode)", file=sys.stderr)
        return EXIT_FAIL
    try:
        return asyncio.run(run_chat(info.telegram_fake_url, args.user or info.chat_user_id, args.say, args.wait))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as e:
        print(f"kdesk chat: cannot reach the fake Telegram at {info.telegram_fake_url}: {redact_text(str(e))}",
              file=sys.stderr)
        return EXIT_FAIL


# --- up ----------------------------------------------------------------------------------------

async def _up(s: Settings, args: argparse.Namespace, var: Path) -> int:
    from libs.common.bus import Bus
    from libs.common.db.migrate import upgrade_to_head
    from libs.common.embedded import EmbeddedNats, EmbeddedPostgres
    from libs.common.simnet import SimEndpoints
    from services.ctl.readiness import Readiness
    from services.ctl.supervisor import Supervisor, discover

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    nats_srv: EmbeddedNats | None = None
    pg_srv: EmbeddedPostgres | None = None
    sup: Supervisor | None = None
    bus: Bus | None = None
    readiness: Readiness | None = None
    wrote_run = False
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        nats_url = s.nats_url
        if not nats_url:
            nats_srv = await asyncio.to_thread(EmbeddedNats(var / "nats").start)
            nats_url = nats_srv.url
            say(f"[kdesk] nats      embedded  {nats_url}  data {var / 'nats'}")
        else:
            say(f"[kdesk] nats      external  {redact_text(nats_url)}")
        db_url = s.database_url_value()
        if not db_url:
            pg_srv = await asyncio.to_thread(EmbeddedPostgres(var / "pg").start)
            db_url = pg_srv.url()
            say(f"[kdesk] postgres  embedded  {db_url}  data {var / 'pg'}")
        else:
            say(f"[kdesk] postgres  external  {redact_text(db_url)}")
        if stop.is_set():
            return EXIT_OK
        await asyncio.to_thread(upgrade_to_head, db_url)
        say("[kdesk] migrations at head")
        await _provision(nats_url, s)
        say("[kdesk] streams and control bucket ready")
        from services.ctl import runfile

        specs, missing = discover(mode=s.mode.value)
        if missing:
            say(f"[kdesk] not built yet (no __main__.py), not started: {', '.join(missing)}")
        env = {"KDESK_NATS_URL": nats_url, "KDESK_DATABASE_URL": db_url, "KDESK_MODE": s.mode.value,
               "KDESK_VAR_DIR": str(var)}
        chat: dict[str, Any] = {}
        if s.mode.value == "sim":
            env.update(await asyncio.to_thread(sim_environment, s, var))
            say(f"[kdesk] simulator ports from {env['KDESK_SIM_BASE_PORT']}; desk key {env['KALSHI_SIM_KEY_ID']}")
            chat = sim_telegram(s, env)
            if chat:
                say(f"[kdesk] telegram  fake Bot API {chat['telegram_fake_url']}; `kdesk chat` speaks as operator "
                    f"{chat['chat_user_id']}")
        elif s.telegram_bot_token is None:
            say("[kdesk] telegram  off (no KDESK_TELEGRAM_BOT_TOKEN): alerts are stored and logged only")
        page = dashboard_environment(s, env) if any(spec.name == "dashboard" for spec in specs) else None
        runfile.write(var, nats_url=nats_url, database_url=db_url, mode=s.mode.value, **chat)
        wrote_run = True
        sup = Supervisor(specs, env=env, say=say, log_dir=var / "log")
        bus = await Bus.connect(nats_url, service="ctl", mode=s.mode, initial_attempts=3)
        sim_status = (SimEndpoints(s.sim_host, int(env["KDESK_SIM_BASE_PORT"])).kalshi_rest_url + "/exchange/status"
                      if "KDESK_SIM_BASE_PORT" in env else None)
        readiness = Readiness(sup, say=say, health_interval_s=s.health_interval_s, sim_status_url=sim_status)
        await readiness.start(bus)
        await sup.start()
        for line in sup.status_lines():
            say(f"[status] {line}")
        for line in how_to_use(var, log_dir=var / "log", chat=bool(chat), dashboard=page):
            say(f"[kdesk] {line}")
        say("[kdesk] a service's line turns ready when its health check passes (as `kdesk health` judges)")
        say(f"[kdesk] up in {s.mode.value} mode with {len(specs)} service(s); Ctrl-C stops everything")

        async def report() -> None:
            while True:
                await asyncio.sleep(args.status_every)
                for line in sup.status_lines():
                    say(f"[status] {line}")

        reporter = asyncio.create_task(report()) if args.status_every > 0 else None
        await sup.watch(stop)
        if reporter:
            reporter.cancel()
        return EXIT_OK
    finally:
        say("[kdesk] stopping")
        if wrote_run:
            from services.ctl import runfile

            runfile.remove(var)
        if readiness is not None:
            await readiness.stop()
        if sup is not None:
            await sup.stop()
        if bus is not None:
            with contextlib.suppress(Exception):
                await bus.close()
        if nats_srv is not None:
            await asyncio.to_thread(nats_srv.stop)
            say("[kdesk] nats      stopped")
        if pg_srv is not None:
            await asyncio.to_thread(pg_srv.stop)
            say("[kdesk] postgres  stopped")
        say("[kdesk] stopped")


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (what an operator would type)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def dashboard_environment(s: Settings, env: dict[str, str]) -> str:
    """The web page's port (the configured one; when that is the default and taken, a free one, so a second desk
    on this machine still gets its page) into `env`; the line `kdesk up` prints about the page."""
    from services.dashboard.address import free_port, local_url, port_free

    host, port = s.dashboard_host, s.dashboard_port
    if "dashboard_port" not in s.model_fields_set and not port_free(host, port):
        port = free_port(host)
    env["KDESK_DASHBOARD_PORT"] = str(port)
    login = "login token required" if s.dashboard_token else "no login: this machine only"
    steer = "pause/resume with the operator token" if s.dashboard_operator_token else "read-only"
    return f"{local_url(host, port)}  (bound to {host}; {login}; {steer})"


def how_to_use(var: Path, *, log_dir: Path, chat: bool, dashboard: str | None = None) -> list[str]:
    """The lines of the first status block that say where the logs are and how to reach the desk."""
    import shutil

    here = Path(sys.executable).with_name("kdesk")
    on_path = shutil.which("kdesk")
    kdesk = "kdesk" if on_path and Path(on_path).resolve() == here.resolve() else \
        _shown_path(here) if here.exists() else f"{_shown_path(Path(sys.executable))} -m services.ctl"
    default_var = (Path.cwd() / "var").resolve() == var.resolve()
    where = "from this directory" if default_var else f"with KDESK_VAR_DIR={var}"
    lines = [f"logs      {_shown_path(log_dir)}/<service>.log (one file per service; also shown here)",
             f"CLI       `{kdesk} status` in another terminal, {where}",
             f"          `{kdesk} --help` lists every command"]
    if chat:
        lines.append(f"chat      `{kdesk} chat` talks to the desk's bot as its operator (fake Telegram)")
    if dashboard:
        lines.append(f"dashboard {dashboard}")
    return lines


SIM_CHAT_USER = 100000001  # the operator `kdesk chat` speaks as in sim mode, unless KDESK_TELEGRAM_OPERATORS says


def sim_telegram(s: Settings, env: dict[str, str]) -> dict[str, Any]:
    """Sim mode talks to the simulator's fake Bot API (unless KDESK_TELEGRAM_API_URL points elsewhere):
    its token, an operator to chat as, and what `kdesk chat` needs in run.json."""
    from libs.common.simnet import SimEndpoints
    from services.sim.telegram import SIM_TOKEN

    if s.telegram_api_url:
        return {}
    url = SimEndpoints(s.sim_host, int(env["KDESK_SIM_BASE_PORT"])).telegram_url
    operators, _ = s.telegram_users()
    user = min(operators) if operators else SIM_CHAT_USER
    env.update({"KDESK_TELEGRAM_API_URL": url, "KDESK_TELEGRAM_BOT_TOKEN": SIM_TOKEN,
                "KDESK_SIM_TELEGRAM_TOKEN": SIM_TOKEN, "KDESK_TELEGRAM_OPERATORS": s.telegram_operators or str(user)})
    return {"telegram_fake_url": url, "chat_user_id": user}


def new_private_key(private: Path) -> None:
    """An RSA key pair's private half at `private` (PKCS#8 PEM, mode 0600), unless a file is already there."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from services.ctl.private import private_dir, write_private

    if private.exists():
        return
    private_dir(private.parent)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # Created 0600 (O_EXCL): the key is never readable by anyone else, not even between a write and a chmod.
    write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), exclusive=True)


def sim_environment(s: Settings, var: Path) -> dict[str, str]:
    """Sim mode: a block of ports for the simulator and a desk API key it will accept.

    The key pair is made once under var/sim: the public half goes where the simulator looks for
    keys (`var/sim/keys/<key_id>.pub.pem`), the private half stays with the desk.
    """
    from cryptography.hazmat.primitives import serialization

    from libs.common.simnet import reserve_block

    env: dict[str, str] = {}
    if not s.sim_base_port:
        env["KDESK_SIM_BASE_PORT"] = str(reserve_block(s.sim_host))
    else:
        env["KDESK_SIM_BASE_PORT"] = str(s.sim_base_port)
    key_id = s.kalshi_sim_key_id.get_secret_value() if s.kalshi_sim_key_id else "desk"
    private = s.kalshi_sim_private_key_path or var / "sim" / f"{key_id}.key.pem"
    public = var / "sim" / "keys" / f"{key_id}.pub.pem"
    new_private_key(private)
    if not public.exists():
        from services.ctl.private import private_dir, write_private

        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        private_dir(public.parent)
        write_private(public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    env.update({"KALSHI_SIM_KEY_ID": key_id, "KALSHI_SIM_PRIVATE_KEY_PATH": str(private),
                "KDESK_SIM_KEYS_DIR": str(public.parent)})
    return env


def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole desk locally until Ctrl-C."""
    from services.ctl.private import owner_only_umask, private_dir, tighten

    s = _settings()
    configure_logging("ctl", s.log_level, s.log_format)
    # Everything under the var dir is the owner's alone: keys, run.json, logs, the embedded servers' data
    # (README: Going live safely). The umask holds for what this process and its children create from here;
    # `tighten` takes group/other access off what an earlier run (or an older kdesk) left.
    owner_only_umask()
    var = Path(s.var_dir).absolute()
    try:
        private_dir(var)
        tighten(var)
    except OSError as e:
        print(f"kdesk up: cannot make {var} private: {e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        return asyncio.run(_up(s, args, var))
    except Exception as e:
        print(f"kdesk up: failed: {redact_text(str(e))}", file=sys.stderr)
        return EXIT_FAIL


HELP_AT = 17  # the column command help starts at: `provision` and `ws-status` keep theirs on their own line


class _HelpFormatter(argparse.HelpFormatter):
    """One line per command at 80 columns (each command's help is at most 80 - HELP_AT characters)."""

    def __init__(self, prog: str) -> None:
        import shutil

        super().__init__(prog, max_help_position=HELP_AT, width=min(shutil.get_terminal_size((80, 24)).columns, 100))
        # argparse sizes the help column by the options' names, not the (further indented) command names.
        self._action_max_length = HELP_AT - 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(
        prog="kdesk", formatter_class=_HelpFormatter,
        description="kdesk: automated trading desk for Kalshi markets. `kdesk up` runs it; the other commands "
        "read and steer the running desk from a second terminal (no variables needed: they find it by "
        "var/run.json). Configuration comes from KDESK_* environment variables (see README).",
        epilog="Views take --json (exact integer money: $0.0001 ticks, 1/100 contracts). `kdesk COMMAND --help` "
        "shows a command's options.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)

    def json_flag(c: argparse.ArgumentParser) -> None:
        c.add_argument("--json", action="store_true", help="the answer as JSON (exact integer money)")

    up = command("up", "start NATS, PostgreSQL and every service here; Ctrl-C stops")
    up.add_argument("--status-every", type=float, default=60.0, metavar="S",
                    help="print service status lines every S seconds (0 = only at start and on changes)")
    up.set_defaults(func=cmd_up)
    views = {"status": "mode, trading, today's P&L, each service's health, stale feeds",
             "positions": "open positions by event: contracts, cost, mark, P&L",
             "orders": "recent orders and decisions (--open: resting only)",
             "fills": "recent fills with price, fee, maker or taker",
             "balance": "cash available at the exchange",
             "strategies": "capital, P&L, fees, fill rate, inventory by strategy",
             "accuracy": "scores and calibration by family, as tables"}
    for view, text in views.items():
        v = command(view, text)
        json_flag(v)
        if view in ("orders", "fills"):
            v.add_argument("--limit", type=int, default=30, help="how many rows (default 30)")
        if view == "orders":
            v.add_argument("--open", action="store_true", help="only open orders")
        if view == "accuracy":
            v.add_argument("--days", type=float, default=30, help="the window in days (default 30)")
            v.add_argument("--family", help="only this family")
        v.set_defaults(func=cmd_view, view=view)
    pl = command("pnl", "P&L per day and by family, fees, the equity curve")
    pl.add_argument("--days", type=int, default=7, help="the window in UTC days, today included (1-365, default 7)")
    json_flag(pl)
    pl.set_defaults(func=cmd_pnl)
    sg = command("signals", "the last signals and why untraded ones were declined")
    sg.add_argument("--ticker", help="only this market")
    sg.add_argument("--last", type=int, default=20, help="how many (default 20)")
    json_flag(sg)
    sg.set_defaults(func=cmd_signals)
    ob = command("orderbook", "a market's last book as a ladder, with its age")
    ob.add_argument("ticker")
    ob.add_argument("--depth", type=int, default=10, help="levels a side (default 10)")
    json_flag(ob)
    ob.set_defaults(func=cmd_orderbook)
    fc = command("forecast", "ensemble maxima by model, brackets vs market, observed max")
    fc.add_argument("city", metavar="CITY", help="a city (nyc, chi ...), its series (KXHIGHNY) or station (KNYC)")
    fc.add_argument("date", metavar="DATE", nargs="?",
                    help="the climate day, YYYY-MM-DD (default: the first day with markets from today on)")
    json_flag(fc)
    fc.set_defaults(func=cmd_forecast)
    lm = command("llm", "the llm family's day: spend vs budget, provider, last analyses")
    lm.add_argument("--budget", metavar="DOLLARS", help="set today's budget for every replica now (e.g. 10)")
    lm.add_argument("--default-budget", action="store_true", help="go back to KDESK_LLM_DAILY_BUDGET_USD")
    lm.add_argument("--last", type=int, default=10, help="how many analyses (default 10)")
    json_flag(lm)
    lm.set_defaults(func=cmd_llm)
    ws = command("ws-status", "each WebSocket: venue, state, last message age, reconnects")
    json_flag(ws)
    ws.set_defaults(func=cmd_ws_status)
    al = command("alerts", "the last alerts of this mode")
    al.add_argument("--last", type=int, default=20, help="how many (default 20)")
    json_flag(al)
    al.set_defaults(func=cmd_alerts)
    for verb, text in (("pause", "pause trading: cancel resting orders, block new ones"),
                       ("resume", "resume trading after a pause"),
                       ("flatten", "cancel all and exit every position at the bid (confirms)")):
        c = command(verb, text)
        if verb == "pause":
            c.add_argument("--reason", help="why (shown in status and alerts)")
        if verb == "flatten":
            c.add_argument("--yes", action="store_true", help="do not ask")
        json_flag(c)
        c.set_defaults(func=cmd_control, verb=verb)
    md = command("mode", "show the mode, or switch it (live: CONFIRM LIVE in 60 s)")
    md.add_argument("mode", nargs="?", choices=MODE_CHOICES, metavar="MODE",
                    help="sim, paper, demo or live. Any mode but the desk's own stops its new orders; live needs "
                    "the executor's KDESK_ALLOW_LIVE=1 and the typed phrase CONFIRM LIVE within 60 s (there is no "
                    "flag to skip it); any other mode disarms live")
    json_flag(md)
    md.set_defaults(func=cmd_mode)
    ch = command("chat", "talk to the desk's Telegram bot here (sim: the fake Telegram)")
    ch.add_argument("--say", action="append", default=[], metavar="TEXT",
                    help="send TEXT, print the answers, and exit when the bot is quiet (repeatable)")
    ch.add_argument("--wait", type=float, default=3.0, help="with --say: seconds of quiet that end an answer")
    ch.add_argument("--user", type=int, help="speak as this Telegram user id (default: the configured operator)")
    ch.set_defaults(func=cmd_chat)
    rn = command("run", "run one service in this process (the image's command)")
    rn.add_argument("service", metavar="SERVICE", help="feeds, signals, executor, resolver, notifier or sim")
    rn.add_argument("args", nargs=argparse.REMAINDER, help="passed to the service (sim: --port, --seed ...)")
    rn.set_defaults(func=cmd_run)
    h = command("health", "exit 0 if SERVICE's heartbeat says healthy (healthchecks)")
    h.add_argument("service")
    h.add_argument("--instance", help="check this instance only (default: any instance)")
    h.add_argument("--wait", type=float, default=12.0, help="seconds to wait for a heartbeat (default 12)")
    h.set_defaults(func=cmd_health)
    d = command("desk", "raw executor answers as JSON: status, orders, reconcile ...")
    d.add_argument("verb", choices=DESK_VERBS)
    d.add_argument("--reason", help="why (pause)")
    d.add_argument("--open", action="store_true", help="only open orders (orders)")
    d.add_argument("--limit", type=int, help="how many rows (orders, fills)")
    d.set_defaults(func=cmd_desk)
    r = command("resolver", "raw resolver answers as JSON: status, accuracy, backfill ...")
    r.add_argument("verb", choices=RESOLVER_VERBS)
    r.add_argument("--days", type=float, default=30, help="the window in days (default 30)")
    r.add_argument("--family", help="only this family (weather, btc ...)")
    r.add_argument("--bins", type=int, help="calibration bins (default 10)")
    r.set_defaults(func=cmd_resolver)
    command("migrate", "apply database migrations (KDESK_DATABASE_URL)").set_defaults(func=cmd_migrate)
    command("provision", "create JetStream streams and the control KV (KDESK_NATS_URL)"
            ).set_defaults(func=cmd_provision)
    return p


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    # Logs go to stderr; stdout carries the command's own answer.
    configure_logging("ctl", "WARNING", "console")
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
