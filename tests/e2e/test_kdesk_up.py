"""`kdesk up` end to end: embedded NATS + PostgreSQL + migrations, clean stop on SIGINT, no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.kit.up import start_up


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


def _kdesk(var: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A second terminal: no KDESK_/KALSHI_ variables but where the var directory is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
    env["KDESK_VAR_DIR"] = str(var)
    return subprocess.run([sys.executable, "-m", "services.ctl", *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
def test_a_second_terminal_finds_the_running_desk_and_reads_it_in_dollars(tmp_path: Path) -> None:
    var = tmp_path / "var"
    proc, out = start_up(var)
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
        paused = _kdesk(var, "pause", "--reason", "e2e")
        assert paused.returncode == 0 and "PAUSED" in paused.stdout
        assert json.loads(_kdesk(var, "status", "--json").stdout)["executor"]["paused"] is True
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
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        drain.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert not (var / "run.json").exists()
    gone = _kdesk(var, "status")
    assert gone.returncode == 1 and "no desk is running" in gone.stderr
    assert "no desk is running" in _kdesk(var, "chat", "--say", "/status").stderr
