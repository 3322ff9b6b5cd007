"""`kdesk up` end to end: embedded NATS + PostgreSQL + migrations, clean stop on SIGINT, no orphans."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import psycopg
import pytest

from benchmarks.chaos.security import loose_files
from libs.common.simnet import SimEndpoints, reserve_block
from services.sim.venues import VENUES
from tests.kit.up import start_up

T = TypeVar("T")


def _descendants_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_kdesk_up_starts_infra_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    proc, out = start_up(tmp_path / "var")
    try:
        text = "".join(out)
        assert "migrations at head" in text and "streams and control bucket ready" in text
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert any("nats-server" in " ".join(psutil.Process(p).cmdline()) for p in children), text
        assert (tmp_path / "var" / "pg" / "PG_VERSION").exists()
        # Keys, run.json, logs, the NATS store and PostgreSQL's files: readable by their owner only.
        assert (tmp_path / "var" / "run.json").exists() and (tmp_path / "var" / "sim" / "desk.key.pem").exists()
        assert loose_files(tmp_path / "var") == []

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=15)
        took = time.monotonic() - started
        text += rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, text
    assert took < 10, f"took {took:.1f}s to stop"
    assert "[kdesk] stopped" in text
    time.sleep(0.2)
    assert _descendants_alive(children) == [], "processes left behind"
    assert loose_files(tmp_path / "var") == []


def _numbers_match_the_database_and_the_exchange(var: Path, run: dict[str, Any]) -> None:
    """Paused (nothing rests, nothing new is sent): positions, orders and fills as the CLI shows them equal the
    ledger's rows, and the positions equal the exchange's own (read with the desk's key, signed)."""
    import asyncio
    from urllib.parse import urlparse

    import psycopg

    from libs.common.kalshi import KalshiRest
    from libs.common.kalshi.rest import sim_environment
    from libs.common.kalshi.signing import Signer, load_private_key
    from libs.common.simnet import SimEndpoints

    for _ in range(30):  # the pause cancels resting orders; wait until the ledger agrees
        if not json.loads(_kdesk(var, "orders", "--open", "--json").stdout):
            break
        time.sleep(0.5)
    shown = {p["ticker"]: p["position"] for p in json.loads(_kdesk(var, "positions", "--json").stdout)}
    fills = json.loads(_kdesk(var, "fills", "--limit", "10000", "--json").stdout)
    with psycopg.connect(run["database_url"].replace("+psycopg", "")) as db:
        ledger = dict(db.execute("SELECT ticker, position FROM positions WHERE mode = 'sim' AND position <> 0"
                                 ).fetchall())
        n_fills = db.execute("SELECT count(*) FROM fills WHERE mode = 'sim'").fetchone()[0]  # type: ignore[index]
        resting = db.execute("SELECT count(*) FROM orders WHERE mode = 'sim' AND status = 'resting'"
                             ).fetchone()[0]  # type: ignore[index]
    assert shown == ledger and len(fills) == n_fills > 0 and resting == 0
    base = urlparse(run["telegram_fake_url"]).port - 6  # type: ignore[operator]  # the sim's seventh port
    sim = SimEndpoints("127.0.0.1", base)

    async def exchange_positions() -> dict[str, int]:
        rest = KalshiRest(sim_environment(sim.kalshi_rest_url, sim.kalshi_ws_url),
                          Signer("desk", load_private_key(var / "sim" / "desk.key.pem")))
        try:
            return {p.ticker: p.position for p in await rest.positions() if p.position}
        finally:
            await rest.aclose()

    assert asyncio.run(exchange_positions()) == ledger


def _stop(proc: subprocess.Popen[str], drain: threading.Thread) -> None:
    """Ctrl-C the desk and wait for it and its output reader."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    drain.join(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def _kdesk(var: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """A second terminal: no KDESK_/KALSHI_ variables but where the var directory is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
    env["KDESK_VAR_DIR"] = str(var)
    return subprocess.run([sys.executable, "-m", "services.ctl", *args], env=env, capture_output=True, text=True,
                          timeout=90, input=stdin)


@pytest.mark.slow
def test_a_second_terminal_finds_the_running_desk_and_reads_it_in_dollars(tmp_path: Path) -> None:
    var = tmp_path / "var"
    proc, out = start_up(var, KDESK_LLM_SERIES="KXSIMQ")  # with the llm family, on the simulator's questions
    drain = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        run = json.loads((var / "run.json").read_text())
        assert run["mode"] == "sim" and run["nats_url"].startswith("nats://") and "password" not in json.dumps(run)
        deadline = time.monotonic() + 90
        while True:  # until the executor has reconciled and answers
            st = _kdesk(var, "status", "--json")
            if st.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert st.returncode == 0, st.stderr + "".join(out[-30:])
        status = json.loads(st.stdout)
        assert status["mode"] == "sim" and isinstance(status["executor"]["open_orders"], int)
        positions = json.loads(_kdesk(var, "positions", "--json").stdout)
        assert isinstance(positions, list)
        shown = _kdesk(var, "status")
        assert shown.returncode == 0 and "mode SIM" in shown.stdout and "bankroll" in shown.stdout
        assert all(len(line) <= 80 for line in shown.stdout.splitlines())
        assert "$" in _kdesk(var, "balance").stdout
        # The sim's crowd is noisy, so the desk trades within seconds: wait for fills before comparing books.
        _eventually("the desk's first fills", lambda: json.loads(_kdesk(var, "fills", "--json").stdout) or None, 60)
        # The llm family: the fake provider's answers become signals and orders like any family's.
        _eventually("an order on an llm-family market", lambda: [
            o for o in json.loads(_kdesk(var, "orders", "--json", "--limit", "200").stdout)
            if o["ticker"].startswith("KXSIMQ-") and o.get("status") != "blocked"] or None, 90)
        day = json.loads(_kdesk(var, "llm", "--json").stdout)
        assert day["mode"] == "sim" and day["spent_ticks"] > 0 and day["calls_today"].get("done", 0) >= 3, day
        assert "spent of $5.0000" in _kdesk(var, "llm").stdout
        paused = _kdesk(var, "pause", "--reason", "e2e")
        assert paused.returncode == 0 and "PAUSED" in paused.stdout
        assert json.loads(_kdesk(var, "status", "--json").stdout)["executor"]["paused"] is True
        _numbers_match_the_database_and_the_exchange(var, run)
        assert "trading resumed" in _kdesk(var, "resume").stdout
        # The same desk from "Telegram": the simulator's fake Bot API, reached by the notifier's aiogram bot.
        chat = _kdesk(var, "chat", "--say", "/status", "--say", "/pause from the chat", "--wait", "2")
        assert chat.returncode == 0 and "bot> [SIM] status" in chat.stdout, chat.stdout + chat.stderr
        assert "bot> [SIM] PAUSED" in chat.stdout, chat.stdout
        after = json.loads(_kdesk(var, "status", "--json").stdout)["executor"]
        assert after["paused"] is True and after["pause_reason"] == "from the chat"
        assert "trading resumed" in _kdesk(var, "resume").stdout
        assert isinstance(json.loads(_kdesk(var, "alerts", "--json").stdout), list)
        sigs = _kdesk(var, "signals", "--json", "--last", "5")
        assert sigs.returncode == 0 and isinstance(json.loads(sigs.stdout), list), sigs.stderr
        missing = _kdesk(var, "orderbook", "KXNOPE-26DEC01-T1")
        assert missing.returncode == 1 and "no book of KXNOPE-26DEC01-T1" in missing.stderr
        # This desk runs without KDESK_ALLOW_LIVE: live is refused before anything is asked or changed.
        live = _kdesk(var, "mode", "live", stdin="CONFIRM LIVE\n")
        assert live.returncode == 1 and "live refused: this desk does not allow live trading" in live.stderr
        assert "Type CONFIRM LIVE" not in live.stderr
        assert json.loads(_kdesk(var, "mode", "--json").stdout)["control_mode"] is None
    finally:
        _stop(proc, drain)
    assert not (var / "run.json").exists()
    gone = _kdesk(var, "status")
    assert gone.returncode == 1 and "no desk is running" in gone.stderr
    assert "no desk is running" in _kdesk(var, "chat", "--say", "/status").stderr


def _eventually(what: str, fn: Callable[[], T | None], timeout: float = 90.0) -> T:
    """Call `fn` until it returns something (not None); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def _rows(db_url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.mark.slow
@pytest.mark.timeout(300)  # a desk start, its readiness, then some twenty commands, each a new Python process
def test_forecast_ws_status_and_mode_from_a_second_terminal_against_the_exchange_and_the_database(
        tmp_path: Path) -> None:
    var = tmp_path / "var"
    base = reserve_block()  # our own port block, so the test knows the simulator's addresses (and turns Binance on)
    sim = SimEndpoints("127.0.0.1", base)
    urls = {v: sim.venue_url(v) + VENUES[v].path for v in VENUES}
    proc, out = start_up(var, KDESK_SIM_BASE_PORT=str(base), KDESK_BINANCE_WS_URL=urls["binance"],
                         KDESK_ALLOW_LIVE="1")
    first_block = "".join(out)
    drain = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        # 1. `kdesk up` says where the logs are and how to reach the desk, then when each service is ready.
        assert f"[kdesk] logs      {var / 'log'}/<service>.log" in first_block
        assert " status` in another terminal" in first_block and " --help` lists every command" in first_block
        assert " chat` talks to the desk's bot" in first_block
        services = ("sim", "feeds", "signals", "executor", "resolver", "notifier")
        assert all(re.search(rf"\[status\] {s} +starting", first_block) for s in services), first_block
        text = _eventually("the desk-ready line", lambda: "".join(out) if "[kdesk] desk ready" in "".join(out)
                           else None, timeout=150)
        ready_at = text.index("[kdesk] desk ready")
        for s in services:
            line = re.search(rf"\[status\] {s} +ready ", text)
            assert line is not None and line.start() < ready_at, f"{s} never turned ready:\n{text[-3000:]}"
        db_url = re.search(r"postgres\s+embedded\s+(\S+)", text).group(1)  # type: ignore[union-attr]

        # 2. forecast: every market of the event (as the exchange lists it), the run's members as stored.
        def forecast() -> dict[str, Any] | None:
            r = _kdesk(var, "forecast", "nyc", "--json")
            data = json.loads(r.stdout) if r.returncode == 0 else None
            return data if data and data["brackets"] and data["run"] and data["models"] else None

        fc = _eventually("a forecast with markets and a run", forecast)
        [event] = fc["events"]
        with httpx.Client(timeout=10) as http:
            listed = http.get(f"{sim.kalshi_rest_url}/events/{event}").json()
        exchange = sorted(m["ticker"] for m in listed["markets"] or listed["event"].get("markets") or [])
        assert len(fc["brackets"]) == len(exchange) > 0 and sorted(b["ticker"] for b in fc["brackets"]) == exchange
        stored = _rows(db_url, "SELECT ticker FROM markets WHERE event_ticker = %s", event)
        assert sorted(t for (t,) in stored) == exchange
        members = _rows(db_url, "SELECT model, count(*), min(tmax_f), max(tmax_f) FROM weather_ensemble_members "
                        "WHERE run_id = %s AND target_date = %s AND tmax_f IS NOT NULL GROUP BY model ORDER BY model",
                        fc["run"]["id"], date.fromisoformat(fc["climate_date"]))
        assert [(m["model"], m["members"], m["min_f"], m["max_f"]) for m in fc["models"]] == \
            [(m, n, pytest.approx(lo), pytest.approx(hi)) for m, n, lo, hi in members]
        assert fc["members"] == sum(n for _, n, _, _ in members)
        for b in fc["brackets"]:
            if b["yes_bid_ticks"] is not None and b["yes_ask_ticks"] is not None:
                assert 0 < b["yes_bid_ticks"] < b["yes_ask_ticks"] < 10_000
        if fc["observed"] is not None:
            [(running_max,)] = _rows(db_url, "SELECT running_max_f FROM weather_observations WHERE station = 'KNYC' "
                                     "AND observed_at = %s", datetime.fromisoformat(fc["observed"]["observed_at"]))
            assert fc["observed"]["running_max_f"] == running_max
        shown = _kdesk(var, "forecast", "nyc", fc["climate_date"])
        assert shown.returncode == 0 and "mode SIM" in shown.stdout and f"forecast nyc (KNYC) · {fc['climate_date']}" \
            in shown.stdout, shown.stderr
        assert sum(b["ticker"].removeprefix(event + "-") in shown.stdout for b in fc["brackets"]) == \
            len(exchange)
        assert all(len(line) <= 80 for line in shown.stdout.splitlines())
        bad = _kdesk(var, "forecast", "gotham")
        assert bad.returncode == 1 and "no settlement station 'gotham'" in bad.stderr

        # 3. ws-status: the Kalshi WebSocket and every venue the simulator serves, connected to its ports.
        def connected() -> dict[str, Any] | None:
            r = _kdesk(var, "ws-status", "--json")
            conns = {c["name"]: c for c in json.loads(r.stdout)["connections"]} if r.returncode == 0 else {}
            return conns if conns and all(c["state"] == "connected" and c["messages"] for c in conns.values()) \
                else None

        conns = _eventually("every connection connected", connected)
        assert set(conns) == {"kalshi", *VENUES}
        assert conns["kalshi"]["url"] == sim.kalshi_ws_url
        assert all(conns[v]["url"] == urls[v] for v in VENUES)
        assert all(c["last_message_age_s"] is not None and c["last_message_age_s"] < 30 for c in conns.values())
        shown = _kdesk(var, "ws-status")
        assert shown.returncode == 0 and "mode SIM" in shown.stdout and "5 connection(s)" in shown.stdout
        assert all(len(line) <= 80 for line in shown.stdout.splitlines())

        # 4. mode: shown, switched, and live armed only with the phrase (this desk runs with KDESK_ALLOW_LIVE=1).
        def executor_blocked(reason: str | None) -> Callable[[], bool | None]:
            def check() -> bool | None:
                st = json.loads(_kdesk(var, "desk", "status").stdout)
                return True if st["blocked"] == reason else None
            return check

        mode = json.loads(_kdesk(var, "mode", "--json").stdout)
        assert mode == {"desk_mode": "sim", "control_mode": None, "live_armed_until": None, "live_armed": False,
                        "executor": {"allow_live": True, "blocked": None, "paused": False}}
        wrong = _kdesk(var, "mode", "live", stdin="confirm live\n")
        assert wrong.returncode == 1 and "Type CONFIRM LIVE within 60 s" in wrong.stderr
        assert "live not confirmed; nothing changed" in wrong.stderr
        assert json.loads(_kdesk(var, "mode", "--json").stdout)["control_mode"] is None
        armed = _kdesk(var, "mode", "live", "--json", stdin="CONFIRM LIVE\n")
        assert armed.returncode == 0, armed.stderr
        state = json.loads(armed.stdout)
        assert state["control_mode"] == "live" and state["live_armed"] is True
        until = datetime.fromisoformat(state["live_armed_until"])
        assert abs(until - datetime.now(UTC) - timedelta(hours=8)) < timedelta(minutes=2)
        _eventually("the sim executor blocking new orders as mode_changed", executor_blocked("mode_changed"))
        shown = _kdesk(var, "mode")
        assert shown.returncode == 0 and "mode SIM" in shown.stdout and "armed until" in shown.stdout
        assert all(len(line) <= 80 for line in shown.stdout.splitlines())
        back = _kdesk(var, "mode", "sim")
        assert back.returncode == 0 and "mode set to SIM" in back.stdout
        assert json.loads(_kdesk(var, "mode", "--json").stdout)["live_armed_until"] is None
        _eventually("the executor trading again", executor_blocked(None))
    finally:
        _stop(proc, drain)
