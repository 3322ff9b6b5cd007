"""Heartbeats, the NATS service API and `kdesk health` against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.health import Freshness, HealthReporter, check, service_api_name


async def test_heartbeat_reports_fresh_and_stale_inputs(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, service="feeds", mode=Mode.SIM)
    now = [100.0]
    fresh = Freshness(clock=lambda: now[0])
    fresh.expect("coinbase", max_age_s=5)
    fresh.expect("ensemble_nyc", max_age_s=3600)
    fresh.mark("coinbase")
    fresh.mark("ensemble_nyc")
    reporter = HealthReporter(bus, "feeds", "i1", fresh, interval_s=0.1)
    await reporter.start()
    try:
        ok, text = await check(bus, "feeds", "i1", wait_s=5)
        assert ok, text
        assert "coinbase 0.0s" in text
        now[0] += 30  # coinbase silent for 30 s: over its 5 s limit
        await asyncio.sleep(0.25)
        ok, text = await check(bus, "feeds", "i1", wait_s=5)
        assert not ok
        assert "degraded" in text and "stale: coinbase" in text
        # The NATS service API answers pings for the service name.
        reply = await bus.nc.request(f"$SRV.PING.{service_api_name('feeds')}", b"", timeout=2)
        assert json.loads(reply.data)["name"] == "kdesk_feeds"
    finally:
        await reporter.stop()
        await bus.close()


async def test_check_fails_when_no_instance_beats(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, service="ctl", mode=Mode.SIM)
    try:
        ok, text = await check(bus, "executor", wait_s=0.3)
        assert not ok and "no heartbeat" in text
    finally:
        await bus.close()


def _kdesk(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.ctl", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


async def test_kdesk_health_exit_codes(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, service="signals", mode=Mode.SIM)
    fresh = Freshness()
    reporter = HealthReporter(bus, "signals", "s1", fresh, interval_s=0.1)
    await reporter.start()
    try:
        healthy = await asyncio.to_thread(_kdesk, ["health", "signals", "--wait", "5"], {"KDESK_NATS_URL": nats_url})
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert healthy.stdout.startswith("healthy: signals/s1: ok")
        missing = await asyncio.to_thread(_kdesk, ["health", "resolver", "--wait", "0.5"],
                                          {"KDESK_NATS_URL": nats_url})
        assert missing.returncode == 1 and "unhealthy" in missing.stdout
    finally:
        await reporter.stop()
        await bus.close()
    down = await asyncio.to_thread(_kdesk, ["health", "signals", "--wait", "1"],
                                   {"KDESK_NATS_URL": "nats://127.0.0.1:1"})
    assert down.returncode == 1 and "cannot reach NATS" in down.stdout
    bad = await asyncio.to_thread(_kdesk, ["health", "signals"], {"KDESK_MODE": "nonsense"})
    assert bad.returncode == 2 and "KDESK_MODE" in bad.stderr
