"""The dashboard service: the sources, the ASGI app served by uvicorn on the service's own loop, and health.

Health (`kdesk health dashboard`): two inputs, `http` (the server answered its own `/healthz` lately) and
`executor` (the executor answered `cmd.executor.status` lately: without it the page shows nothing current).
The probe asks the executor every KDESK_HEALTH_INTERVAL_S, so the status shown is warm for the next page.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import uvicorn

from libs.common.config import ConfigError
from libs.common.db import create_engine, session_factory
from libs.common.logs import get_logger, redact_text
from libs.common.runtime import ServiceRuntime
from services.dashboard.access import Access, check_binding
from services.dashboard.address import listen, local_url
from services.dashboard.app import Controls, create_app, templates
from services.dashboard.audit import ControlAudit
from services.dashboard.page import PageBuilder
from services.dashboard.sources import Sources

log = get_logger(__name__)
STOP_GRACE_S = 3.0


class _Server(uvicorn.Server):
    """uvicorn on a loop it does not own: the service runtime handles SIGTERM/SIGINT and sets `should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def run_dashboard(rt: ServiceRuntime) -> None:
    """Wire and serve until stopped."""
    s = rt.settings
    access = Access.from_settings(s)
    check_binding(s.dashboard_host, access.login_token)
    db_url = s.require_database_url("the dashboard records pause and resume in command_audit "
                                    "(KDESK_DASHBOARD_OPERATOR_TOKEN is set)") if access.controls else None
    try:
        sock = listen(s.dashboard_host, s.dashboard_port)
    except OSError as e:
        raise ConfigError(f"KDESK_DASHBOARD_HOST/KDESK_DASHBOARD_PORT: cannot listen on {s.dashboard_host}:"
                          f"{s.dashboard_port}: {e.strerror or e} (another program uses the port? set "
                          "KDESK_DASHBOARD_PORT)") from None
    engine = create_engine(db_url) if db_url else None
    controls = None
    if engine is not None:
        controls = Controls(lambda service, verb, payload: rt.bus.request(service, verb, payload, timeout=15.0),
                            ControlAudit(session_factory(engine), s.mode.value))
    sources = Sources(rt.bus, refresh_s=s.dashboard_refresh_s, health_interval_s=s.health_interval_s)
    await sources.start()
    app = create_app(mode=s.mode.value, access=access, builder=PageBuilder(templates(), sources), controls=controls,
                     refresh_s=s.dashboard_refresh_s, host=s.dashboard_host)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                                    timeout_graceful_shutdown=int(STOP_GRACE_S), proxy_headers=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard:http")
    url = local_url(s.dashboard_host, s.dashboard_port)
    log.info("dashboard_listening", url=url, host=s.dashboard_host, port=s.dashboard_port,
             login=access.login_required, controls=access.controls)
    limit = 3 * s.health_interval_s + 2
    rt.freshness.expect("http", limit)
    rt.freshness.expect("executor", limit)
    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as probe:
            while not rt.stopping.is_set():
                if serving.done():
                    raise RuntimeError(f"the dashboard's HTTP server stopped: {serving.exception()!r}")
                await _probe(probe, url, rt)
                status = await sources.sources["status"].get(time.monotonic())
                if status.ok_at is not None:
                    rt.freshness.mark("executor", age_s=time.monotonic() - status.ok_at)
                stats = app.state.stats
                rt.health.detail = (f"serving {url}; {stats['api']} data request(s), {stats['pages']} page(s), "
                                    f"{stats['denied']} refused" + (f"; executor: {status.error}" if status.error
                                                                     else ""))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rt.stopping.wait(), s.health_interval_s)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, STOP_GRACE_S + 2)
        await sources.stop()
        if engine is not None:
            await engine.dispose()


async def _probe(client: httpx.AsyncClient, url: str, rt: ServiceRuntime) -> None:
    try:
        r = await client.get(url + "healthz")
        if r.status_code == 200:
            rt.freshness.mark("http")
    except httpx.HTTPError as e:
        log.warning("dashboard_probe_failed", error=redact_text(str(e)))


__all__ = ["run_dashboard"]
