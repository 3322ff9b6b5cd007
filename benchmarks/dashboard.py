"""Dashboard: the page-data request (`GET /api/page`) under a sim session, its p95 (and p50) in ms.

The whole desk runs as `kdesk up` runs it (embedded NATS and PostgreSQL, every service in its own process, the
simulator's crowd trading against the desk). Once the dashboard is healthy and the desk has fills, one client
asks for the page data the way an open page does, `SAMPLES` times, `PACE_S` apart (longer than the fast
sources' cache, so every request asks the executor for its status, positions, orders and fills again, and the
P&L and scores whenever theirs run out). Each sample is the client's round trip on loopback: the cached or
fresh `cmd.*` answers, the fragments, the figures and the JSON.

The page is served from the last complete answers while stale ones refresh in the background (a slow executor
delays what is shown, never the page), so the round trip is mostly rendering; how old the executor's status
shown was is reported beside it (`dashboard_status_age_p95_ms`: the price of not waiting). Samples whose page
carried a source's error are counted in `dashboard_answer_errors` (a service still starting, say).
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from services.dashboard.address import free_port
from tests.kit.up import start_up

SAMPLES = 120
PACE_S = 0.6  # the bench's desk polls each second (KDESK_DASHBOARD_REFRESH_S=1): its fast sources keep 0.5 s
WARM_TIMEOUT_S = 180.0


def _warm(http: httpx.Client) -> None:
    """Wait until the page data has the executor's answers and at least one fill (the desk is trading)."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            d = http.get("/api/page").json()
            if "status" not in d["errors"] and "data-fill-id" in d["panels"]["fills"]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"the dashboard had no executor answers and fills within {WARM_TIMEOUT_S:.0f} s")


def _measure() -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port("127.0.0.1")
        proc, out = start_up(Path(tmp) / "var", KDESK_DASHBOARD_PORT=str(port), KDESK_DASHBOARD_REFRESH_S="1")
        drain = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
        drain.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as http:
                _warm(http)
                took: list[float] = []
                ages: list[float] = []
                errors = 0
                for _ in range(SAMPLES):
                    started = time.perf_counter()
                    r = http.get("/api/page")
                    took.append((time.perf_counter() - started) * 1000)
                    d = r.json()
                    errors += r.status_code != 200 or bool(d["errors"])
                    if d["ages_s"].get("status") is not None:
                        ages.append(d["ages_s"]["status"] * 1000)
                    time.sleep(max(0.0, PACE_S - took[-1] / 1000))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            drain.join(timeout=10)
    q = statistics.quantiles(took, n=100)
    a = statistics.quantiles(ages, n=100)
    return {"dashboard_p95_ms": round(q[94], 2), "dashboard_p50_ms": round(q[49], 2),
            "dashboard_status_age_p95_ms": round(a[94], 1), "dashboard_samples": len(took),
            "dashboard_answer_errors": errors}


async def run() -> dict[str, float | int]:
    """The page-data request's latency on a running sim desk."""
    return await asyncio.to_thread(_measure)


__all__ = ["run"]
