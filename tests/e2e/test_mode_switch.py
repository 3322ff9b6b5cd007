"""The money-losing sequence of the mode-isolation issue, end to end: `kdesk up` in sim until the desk trades,
Ctrl-C, then `KDESK_MODE=paper kdesk up` on the same var dir with every outside service unreachable.

Before the fix the paper desk replayed the sim's books, forecasts and definitions from JetStream and placed
paper orders within a second. Now the paper desk has streams of its own (empty), emits no signal, places no
order, and says it is waiting for fresh data; the simulator is not started at all.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import nats
import psycopg
import pytest

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.health import check
from tests.kit.up import start_up

pytestmark = pytest.mark.slow

UNREACHABLE = "127.0.0.1:9"  # discard port: nothing listens, connections are refused at once


def _stop(proc: subprocess.Popen[str], out: list[str]) -> str:
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    out.append(rest)
    assert proc.returncode == 0, "".join(out)
    return "".join(out)


def _urls(out: list[str]) -> tuple[str, str]:
    text = "".join(out)
    nats_url = re.search(r"nats\s+embedded\s+(\S+)", text)
    db_url = re.search(r"postgres\s+embedded\s+(\S+)", text)
    assert nats_url and db_url, text
    return nats_url.group(1), db_url.group(1)


def _count(db_url: str, sql: str) -> int:
    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


async def _stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


def test_sim_then_paper_on_the_same_var_trades_nothing_and_waits_for_fresh_data(tmp_path: Path) -> None:
    var = tmp_path / "var"
    # 1. A sim session that really trades: books, signals and orders in its own streams and ledger.
    proc, out = start_up(var, KDESK_MODE="sim", KDESK_RECONCILE_INTERVAL_S="10")
    try:
        nats_url, db_url = _urls(out)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and _count(db_url, "SELECT count(*) FROM orders WHERE mode='sim' "
                                                             "AND status <> 'blocked'") == 0:
            time.sleep(1)
        assert _count(db_url, "SELECT count(*) FROM orders WHERE mode='sim' AND status <> 'blocked'") > 0, \
            "the sim session placed no order: the test would prove nothing"
        assert asyncio.run(_stream_messages(nats_url, "SIM_MD_BOOKS")) > 0
    finally:
        if proc.poll() is None:
            _stop(proc, out)

    # 2. Paper on the same var, nothing outside reachable.
    outside = {"KDESK_KALSHI_REST_URL": f"http://{UNREACHABLE}/trade-api/v2",
               "KDESK_KALSHI_WS_URL": f"ws://{UNREACHABLE}/trade-api/ws/v2",
               "KDESK_COINBASE_WS_URL": f"ws://{UNREACHABLE}", "KDESK_KRAKEN_WS_URL": f"ws://{UNREACHABLE}",
               "KDESK_BITSTAMP_WS_URL": f"ws://{UNREACHABLE}", "KDESK_WEATHER_API_URL": f"http://{UNREACHABLE}"}
    proc, out = start_up(var, KDESK_MODE="paper", **outside)
    try:
        nats_url, db_url = _urls(out)
        startup = "".join(out)
        assert not re.search(r"\[status\] sim\s", startup), startup  # no simulator outside sim mode

        async def observe() -> tuple[dict[str, object], str, str]:
            bus = await Bus.connect(nats_url, service="e2e", mode=Mode.PAPER)
            try:
                status: dict[str, object] = {}
                for _ in range(60):  # the executor answers once reconciled (paper: at once)
                    try:
                        status = await bus.request("executor", "status", timeout=2)
                        break
                    except Exception:
                        await asyncio.sleep(1)
                await asyncio.sleep(10)  # time for replays to have done harm, as they did within 1 s before
                status = await bus.request("executor", "status", timeout=5)
                _, sig_health = await check(bus, "signals", wait_s=15)
                _, ex_health = await check(bus, "executor", wait_s=15)
                return status, sig_health, ex_health
            finally:
                await bus.close()

        status, sig_health, ex_health = asyncio.run(observe())
        assert status["mode"] == "paper" and status["orders_sent"] == 0, status
        assert status["waiting_for_fresh_data"] is True and status["fresh_books"] == 0, status
        assert "waiting for fresh data" in sig_health, sig_health
        assert "waiting for fresh data" in ex_health, ex_health
        assert _count(db_url, "SELECT count(*) FROM orders WHERE mode='paper'") == 0
        assert _count(db_url, "SELECT count(*) FROM signals WHERE mode='paper'") == 0
        # The sim's data is still there, in the sim's streams, untouched; paper's own streams hold no book.
        assert asyncio.run(_stream_messages(nats_url, "SIM_MD_BOOKS")) > 0
        assert asyncio.run(_stream_messages(nats_url, "PAPER_MD_BOOKS")) == 0
        assert asyncio.run(_stream_messages(nats_url, "PAPER_SIGNALS")) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, out)
