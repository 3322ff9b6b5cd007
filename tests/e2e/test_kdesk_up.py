"""`kdesk up` end to end: embedded NATS + PostgreSQL + migrations, clean stop on SIGINT, no orphans."""

from __future__ import annotations

import signal
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
