"""The campaign's Security figures, each a count that must be 0 (issue #18).

- `loose_files(root)`: files and directories under a desk's var dir that group or others may read or write.
- `live_refusals(nats_url, database_url, work_dir)`: the real entry points (`python -m services.executor`,
  `kdesk up`, `kdesk mode live`) started the ways that must not trade live, counting each that did not refuse.
  The "exchange" is the simulator's protocol-faithful fake (services/sim) standing at the production URL
  (KDESK_KALSHI_REST_URL / _WS_URL): the real exchange is never reached, and every request is counted.
- `kdesk_up_loose_files(work_dir)`: a real `kdesk up` (sim mode, its own embedded servers), then
  `loose_files` of the var dir it wrote, while it runs and after it stopped.

Everything here runs in the `live` mode's namespace of the NATS server (its own streams and control bucket)
and writes only `live` rows to the database, so a sim campaign sharing the servers is not disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# --- files -----------------------------------------------------------------------------------------


def loose_files(root: Path) -> list[str]:
    """Every regular file under `root` (recursively) with any group/other permission bit (mode & 0o077), and
    every directory (`root` included) that group or others may list or write (mode & 0o066), as
    "relative/path (0644)"; empty when everything is its owner's alone.

    In scope is all a desk writes under its var dir: keys (sim/*.key.pem, sim/keys), run.json, log/*.log,
    the embedded NATS store and log, PostgreSQL's log and data dir (initdb makes it 0700/0600; a loose file
    in it is still reported). Not counted: symlinks, sockets and FIFOs (their bits say who may connect, and
    PostgreSQL's socket lives in its 0700 data dir), and execute-only access to a directory (o+x without r/w:
    others can reach a name they already know, never list one — the embedded PostgreSQL needs it to reach its
    data dir when it runs as its own system user under root; everything inside is checked on its own).
    """
    root = Path(root)
    found: list[str] = []

    def check(p: Path) -> None:
        try:
            st = p.lstat()
        except OSError:  # gone meanwhile (a log rotated, a pid file removed)
            return
        mode = stat.S_IMODE(st.st_mode)
        if (stat.S_ISREG(st.st_mode) and mode & 0o077) or (stat.S_ISDIR(st.st_mode) and mode & 0o066):
            rel = p.relative_to(root).as_posix() if p != root else "."
            found.append(f"{rel} ({mode:04o})")

    if not root.exists():
        return found
    check(root)
    for top, dirs, files in os.walk(root):
        here = Path(top)
        for name in sorted(dirs) + sorted(files):
            check(here / name)
    return found


# --- live refusals ---------------------------------------------------------------------------------

WRONG_PHRASES = ("confirm live", "CONFIRM  LIVE", "yes")  # answers to the live question that must change nothing
KEY_ID = "kdesk-security-prod"  # the "production" key the checks sign with (registered with the fake only)
DESK_USER, CROWD_USER = "security-live-desk", "security-crowd"
FUNDS = 10_000 * 10_000  # $10,000 in ticks


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
    env.update({"PYTHONUNBUFFERED": "1", "KDESK_LOG_FORMAT": "json"})
    env.update(extra)
    return env


def _order_requests(requests: Mapping[str, int]) -> int:
    """Requests that create or change an order (POST/PUT under /portfolio): what "sending a live order" is."""
    return sum(n for k, n in requests.items() if k.split(" ", 1)[0] in ("POST", "PUT") and "/portfolio" in k)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)


async def _run(args: Sequence[str], env: Mapping[str, str], *, stdin: str | None = None, timeout_s: float,
               stop_when: Any = None) -> tuple[int | None, str]:
    """Run `python -m ...args` in its own session; (exit code or None when it had to be killed, output).
    `stop_when()` true ends the wait early (the child is killed): it was seen doing what it must not."""
    log = Path(env["KDESK_VAR_DIR"]) / f"{args[1].replace('.', '_')}-{time.monotonic_ns()}.out"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=dict(env), stdout=out, stderr=out, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL)
    if stdin is not None and proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin.encode())
            await proc.stdin.drain()
            proc.stdin.close()
    deadline = time.monotonic() + timeout_s
    while proc.returncode is None and time.monotonic() < deadline and not (stop_when and stop_when()):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.1)
    code = proc.returncode
    await _kill(proc)
    return code, log.read_text(errors="replace")


async def _control_state(kv: Any) -> tuple[str | None, str | None]:
    from libs.common import control

    sw = await control.read_mode(kv)
    return sw.mode, sw.live_armed_until.isoformat() if sw.live_armed_until else None


async def _clear_control(kv: Any) -> None:
    import nats.js.errors

    from libs.common.subjects import ControlKey

    for key in (ControlKey.MODE, ControlKey.LIVE_ARMED_UNTIL):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await kv.delete(key)


async def _publish_market(bus: Any, exchange: Any, ticker: str) -> None:
    """What feeds publishes for one market in live mode: its definition, then its book."""
    from libs.common import subjects
    from libs.common.config import Mode
    from libs.common.events import BookUpdate, MarketDefinition, PriceRange

    m = exchange.catalog.markets[ticker]
    series = exchange.catalog.series[m.series_ticker]
    now = datetime.now(UTC)
    await bus.publish_js(subjects.md_market(m.series_ticker, ticker), MarketDefinition(
        ts_event=now, mode=Mode.LIVE, ticker=ticker, event_ticker=m.event_ticker, series_ticker=m.series_ticker,
        status="active", strike_type=m.strike_type, floor_strike=m.floor_strike, cap_strike=m.cap_strike,
        close_time=m.close_time, price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in m.grid.ranges),
        fee_type=series.fee_type, fee_multiplier=series.fee_multiplier, exchange_index=m.shard))
    yes, no = exchange.engine.book(ticker)
    book = BookUpdate(ts_event=now, mode=Mode.LIVE, ticker=ticker, series_ticker=m.series_ticker,
                      seq=time.time_ns() // 1000, yes_bids=tuple(yes), no_bids=tuple(no))
    await bus.publish_js(subjects.md_book(m.series_ticker, ticker), book)
    await bus.publish(subjects.md_book(m.series_ticker, ticker), book)


def _absolute(path: Path) -> Path:
    return Path(path).absolute()


def _prepare(work_dir: Path, new_key: Any) -> tuple[Path, Path]:
    """The work directory (made) and the production key the checks sign with (made once, 0600)."""
    work = _absolute(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    key = work / "prod.key.pem"
    new_key(key)
    return work, key


async def _executor_status(bus: Any, timeout: float = 2.0) -> dict[str, Any] | None:
    from libs.common.bus import CommandError

    try:
        return await bus.request("executor", "status", timeout=timeout)  # type: ignore[no-any-return]
    except (TimeoutError, CommandError, OSError):
        return None


async def live_refusals(nats_url: str, database_url: str, work_dir: Path, *, extra_env: Mapping[str, str] | None = None,
                        armed_until: datetime | None = None, phrases: Sequence[str] = WRONG_PHRASES,
                        start_timeout_s: float = 120.0, refusal_wait_s: float = 45.0) -> dict[str, Any]:
    """Count the ways into live trading that did not refuse (must be 0). Checks, in order:

    1. `python -m services.executor` with KDESK_MODE=live and production keys but no KDESK_ALLOW_LIVE exits 2
       saying KDESK_ALLOW_LIVE, and the exchange receives no request at all;
    2. `kdesk up` started the same way exits 2 saying KDESK_ALLOW_LIVE (it is given dead NATS/PostgreSQL
       addresses, so even a `kdesk up` that did not refuse could start nothing);
    3. `kdesk mode live` with the right phrase while no live executor answers refuses and changes nothing;
    4. an executor with KDESK_ALLOW_LIVE=1 but not armed takes a signal with a large edge on a market with a
       book and declines it as `live_not_armed`; no order request reaches the exchange;
    5. `kdesk mode live` answered with each of `phrases` (not the exact CONFIRM LIVE) exits 1, "nothing
       changed", and the control bucket is as before.

    The seams a test uses to show that a check can fail, all outside the code under test: `extra_env` is
    added to every child's environment (an operator's shell exporting KDESK_ALLOW_LIVE=1, say), `armed_until`
    is written to the live control bucket before the checks (a stale arming), `phrases` are what is typed.
    `nats_url` / `database_url` are the servers the live executor uses (a migrated database); `work_dir` holds
    the key and the children's output.
    """
    from libs.common import subjects
    from libs.common.bus import Bus
    from libs.common.config import Mode
    from libs.common.embedded import free_port
    from libs.common.events import Signal
    from libs.common.matching.types import OrderRequest
    from libs.common.subjects import ControlKey
    from services.ctl.cli import new_private_key
    from services.sim.server import SimExchange
    from tests.kit.sim import EVENT, SERIES, TICKERS, hand_world

    work, key = _prepare(work_dir, new_private_key)
    details: list[dict[str, Any]] = []

    def record(check: str, refused: bool, detail: str) -> None:
        details.append({"check": check, "refused": refused, "detail": detail[-600:]})

    exchange = SimExchange(hand_world())
    await exchange.start()
    from cryptography.hazmat.primitives import serialization

    pub = serialization.load_pem_private_key(key.read_bytes(), password=None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    exchange.register_key(KEY_ID, pub, DESK_USER, balance=FUNDS)
    live = {"KDESK_MODE": "live", "KALSHI_PROD_KEY_ID": KEY_ID, "KALSHI_PROD_PRIVATE_KEY_PATH": str(key),
            "KDESK_KALSHI_REST_URL": exchange.rest_url, "KDESK_KALSHI_WS_URL": exchange.ws_url,
            "KDESK_VAR_DIR": str(work / "var"), "KDESK_INSTANCE": "security-live", "KDESK_HEALTH_INTERVAL_S": "1"}
    servers = {"KDESK_NATS_URL": nats_url, "KDESK_DATABASE_URL": database_url}
    extra = dict(extra_env or {})
    bus = await Bus.connect(nats_url, service="security-check", mode=Mode.LIVE)
    executor: asyncio.subprocess.Process | None = None
    try:
        await bus.provision()
        kv = await bus.control()
        await _clear_control(kv)
        if armed_until is not None:
            await kv.put(ControlKey.MODE, b"live")
            await kv.put(ControlKey.LIVE_ARMED_UNTIL, armed_until.astimezone(UTC).isoformat().encode())

        # 1. the executor, live without KDESK_ALLOW_LIVE
        before = sum(exchange.requests.values())
        code, out = await _run(["-m", "services.executor"], _clean_env({**live, **servers, **extra}),
                               timeout_s=refusal_wait_s, stop_when=lambda: sum(exchange.requests.values()) > before)
        reached = sum(exchange.requests.values()) - before
        record("executor_live_without_allow_live", code == 2 and "KDESK_ALLOW_LIVE" in out and reached == 0,
               f"exit {code}, {reached} exchange request(s); {out.strip()}")

        # 2. `kdesk up`, live without KDESK_ALLOW_LIVE (dead server addresses: nothing can start either way)
        dead = {"KDESK_NATS_URL": f"nats://127.0.0.1:{free_port()}",
                "KDESK_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/kdesk"}
        up_var = work / "up-var"
        before = sum(exchange.requests.values())
        code, out = await _run(["-m", "services.ctl", "up", "--status-every", "0"],
                               _clean_env({**live, **dead, "KDESK_VAR_DIR": str(up_var), **extra}),
                               timeout_s=refusal_wait_s)
        reached = sum(exchange.requests.values()) - before
        record("kdesk_up_live_without_allow_live",
               code == 2 and "KDESK_ALLOW_LIVE" in out and "[kdesk] nats" not in out
               and not (up_var / "run.json").exists() and reached == 0,
               f"exit {code}, {reached} exchange request(s); {out.strip()}")

        ctl_env = _clean_env({**live, **servers, "KDESK_ALLOW_LIVE": "1", **extra})

        async def mode_live(typed: str) -> tuple[int | None, str]:
            return await _run(["-m", "services.ctl", "mode", "live"], ctl_env, stdin=typed + "\n", timeout_s=90)

        # 3. `kdesk mode live` + the right phrase, no live executor answering
        state = await _control_state(kv)
        code, out = await mode_live("CONFIRM LIVE")
        after = await _control_state(kv)
        record("mode_live_without_an_executor", code == 1 and "live refused" in out and after == state,
               f"exit {code}, control {state} -> {after}; {out.strip()}")

        # 4. an executor allowed to trade live, not armed
        with (work / "executor-allowed.out").open("wb") as log:
            executor = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.executor", stdout=log, stderr=log, start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
                env=_clean_env({**live, **servers, "KDESK_ALLOW_LIVE": "1", **extra}))
        deadline = time.monotonic() + start_timeout_s
        status = None
        while status is None and executor.returncode is None and time.monotonic() < deadline:
            status = await _executor_status(bus, 1.0)
        if status is None:
            tail = (work / "executor-allowed.out").read_text(errors="replace")[-1500:]
            record("executor_allowed_not_armed", False, f"the allowed live executor never answered: {tail}")
        else:
            ticker = TICKERS[2]
            exchange.fund(CROWD_USER, FUNDS)
            exchange.engine.place(CROWD_USER, OrderRequest(ticker, "bid", 3000, 5_000, "good_till_canceled",
                                                           "taker_at_cross"))
            exchange.engine.place(CROWD_USER, OrderRequest(ticker, "ask", 3400, 5_000, "good_till_canceled",
                                                           "taker_at_cross"))
            for t in TICKERS:
                await _publish_market(bus, exchange, t)
            await asyncio.sleep(1.0)  # the definitions and the book reach the executor before the signal
            orders_before = _order_requests(exchange.requests)
            now = datetime.now(UTC)
            sig = Signal(id=f"security-live-{time.time_ns()}", ts_event=now, mode=Mode.LIVE, family="weather",
                         series_ticker=SERIES, event_ticker=EVENT, ticker=ticker, model="security", model_version="1",
                         p_model=0.9, p_market=0.32, action="buy_yes", confidence=0.95,
                         valid_until=now + timedelta(seconds=120))
            await bus.publish_js(subjects.sig(sig.family, sig.series_ticker, sig.ticker), sig)
            decided: dict[str, Any] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = await _executor_status(bus)
                decided = dict((st or {}).get("decisions") or {})
                if sum(decided.values()) >= 1:
                    break
                await asyncio.sleep(0.3)
            await asyncio.sleep(1.0)  # an order the decision sent would have reached the exchange by now
            sent = _order_requests(exchange.requests) - orders_before
            held = len(exchange.engine.orders(DESK_USER))
            record("executor_allowed_not_armed",
                   decided == {"live_not_armed": 1} and sent == 0 and held == 0,
                   f"decisions {decided}, {sent} order request(s) at the exchange, {held} order(s) held there")

        # 5. `kdesk mode live` answered with anything but the exact phrase
        for typed in phrases:
            state = await _control_state(kv)
            code, out = await mode_live(typed)
            after = await _control_state(kv)
            record(f"mode_live_typed:{typed!r}", code == 1 and "nothing changed" in out and after == state,
                   f"exit {code}, control {state} -> {after}; {out.strip()}")
    finally:
        if executor is not None and executor.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                executor.send_signal(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(executor.wait(), 15)
            await _kill(executor)
        with contextlib.suppress(Exception):
            await _clear_control(await bus.control())  # leave the live bucket unarmed, whatever happened
        with contextlib.suppress(Exception):
            await bus.close()
        await exchange.stop()
    failures = [d for d in details if not d["refused"]]
    return {"live_refusal_checks": len(details), "live_refusal_failures": len(failures),
            "live_exchange_requests": sum(exchange.requests.values()),
            "live_order_requests": _order_requests(exchange.requests), "details": details}


# --- what `kdesk up` writes --------------------------------------------------------------------------


async def kdesk_up_loose_files(work_dir: Path, *, extra_env: Mapping[str, str] | None = None,
                               timeout_s: float = 180.0) -> dict[str, Any]:
    """Start a real `kdesk up` (sim mode, embedded NATS and PostgreSQL under `work_dir/var`), let it come up,
    then `loose_files` of its var dir while it runs and again after Ctrl-C; the figures."""
    var = _absolute(work_dir) / "var"
    env = _clean_env({"KDESK_VAR_DIR": str(var), "KDESK_LOG_FORMAT": "console", **(extra_env or {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ctl", "up", "--status-every", "0", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    up = False
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(), max(deadline - time.monotonic(), 0.1))
            except TimeoutError:
                break
            if not raw:
                break
            lines.append(raw.decode(errors="replace"))
            if "Ctrl-C stops everything" in lines[-1]:
                up = True
                break
        running: list[str] = []
        if up:
            await asyncio.sleep(3.0)  # every service has opened its log
            running = loose_files(var)
        drain = asyncio.create_task(proc.stdout.read())
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 30)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(drain, 5)
    finally:
        await _kill(proc)
    stopped = loose_files(var)
    paths = sorted(set(running) | set(stopped))
    return {"kdesk_up_started": up, "loose_files": len(paths) if up else -1, "paths": paths,
            "output_tail": "".join(lines[-20:]) if not up else ""}


__all__ = ["WRONG_PHRASES", "kdesk_up_loose_files", "live_refusals", "loose_files"]
