"""The dashboard's routes (Starlette): the page, its data, login, and the operator's two-step controls.

- `GET /` the page (panels inlined); `GET /api/page` the same panels and charts as JSON, polled by the page;
  both need a role (`access`): without one `/` sends the browser to `/login` and `/api/page` answers 401.
- `POST /control/pause|resume` (operators only) answers a confirmation page carrying a one-time nonce bound
  to the asking session; `POST /control/confirm` with that nonce, within `CONFIRM_WINDOW_S`, sends
  `cmd.executor.pause` / `resume` — the requests `kdesk pause` and Telegram's `/pause` send. Every step, a
  refusal included, is a `command_audit` row (`audit`).
- `GET /healthz` says only that the server answers (the service's own health probe); static files and
  plotly.min.js (from the plotly wheel) need no login: they hold no data.

Every HTML and JSON answer passes `scrub` (the configured tokens never leave, even if a service echoed one)
and carries headers that keep it out of frames, caches and other sites' scripts.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
import orjson
import plotly
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.bus import CommandError
from libs.common.control import CONFIRM_WINDOW_S
from libs.common.display import MODE_LABEL
from libs.common.logs import get_logger, redact_text
from services.dashboard.access import COOKIE, SESSION_S, Access, Role
from services.dashboard.audit import ControlAudit, new_command_id
from services.dashboard.page import PageBuilder

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
MAX_FORM_BYTES = 4096
FAILED_LOGIN_DELAY_S = 0.5  # a wrong token costs the guesser time (tokens are 16+ characters anyway)

VERBS: dict[str, tuple[str, str, str]] = {  # verb -> (title, what it does, what the answer means)
    "pause": ("Pause", "Cancels every resting order and blocks new ones until someone resumes.",
              "PAUSED: no new orders; resting orders canceled"),
    "resume": ("Resume", "New orders are allowed again (caps, freshness and the mode still apply).",
               "trading resumed"),
}

# plotly.js draws with inline styles; it needs no eval for the chart types used here.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def host_of(header: str) -> str:
    """The host name of a `Host` header, without its port (`[::1]:8765` → `::1`)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityHeaders:
    """Adds the page's security headers to every answer, and `no-store` to everything but static files.

    With `allowed_hosts` (a dashboard with no login: loopback), a request whose `Host` is not one of them is
    refused: a web page elsewhere cannot point a name of its own at 127.0.0.1 (DNS rebinding) and read the desk.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None:
            host = host_of(dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                response = Response("this dashboard answers on its own address only (Host not allowed)",
                                    status_code=421, media_type="text/plain")
                await response(scope, receive, send)
                return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def templates() -> jinja2.Environment:
    """The page's Jinja2 templates (autoescaped)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]),
                              trim_blocks=True, lstrip_blocks=True)


@dataclass
class Pending:
    """A control action asked for and not yet confirmed."""

    verb: str
    reason: str
    deadline: float  # monotonic
    session: str  # fingerprint of the asking session: another browser cannot confirm it
    actor: str


Ask = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class Controls:
    """Pause and resume as the CLI and the bot send them (`cmd.executor.pause|resume`), two steps, audited."""

    def __init__(self, ask: Ask, audit: ControlAudit, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ask = ask
        self.audit = audit
        self.monotonic = monotonic
        self.pending: dict[str, Pending] = {}

    def _prune(self) -> None:
        now = self.monotonic()
        for nonce in [n for n, p in self.pending.items() if p.deadline + CONFIRM_WINDOW_S < now]:
            del self.pending[nonce]

    async def refuse(self, verb: str, actor: str, why: str) -> None:
        """Audit a step that was not allowed."""
        await self.audit.begin(command_id=new_command_id(), actor=actor, command=f"/{verb}", args=[],
                               authorized=False, outcome="denied", detail=why)

    async def ask_for(self, verb: str, reason: str, *, session: str, actor: str) -> str:
        """Step one: remember what is asked, audit it as awaiting confirmation; the nonce to confirm with."""
        self._prune()
        nonce = secrets.token_urlsafe(18)
        self.pending[nonce] = Pending(verb, reason, self.monotonic() + CONFIRM_WINDOW_S, session, actor)
        await self.audit.begin(command_id=new_command_id(), actor=actor, command=f"/{verb}",
                               args=[reason] if reason else [], authorized=True, outcome="awaiting_confirmation")
        return nonce

    async def confirm(self, nonce: str, *, session: str, actor: str) -> tuple[str, str, str]:
        """Step two: (outcome, verb, detail); the action is sent only for a live nonce of the same session."""
        p = self.pending.get(nonce)
        if p is None or not secrets.compare_digest(p.session, session):
            await self.audit.begin(command_id=new_command_id(), actor=actor, command="/confirm", args=[],
                                   authorized=True, outcome="expired", detail="no such confirmation")
            return "expired", "", "that confirmation is no longer valid; nothing was done"
        del self.pending[nonce]
        command_id = new_command_id()
        if self.monotonic() > p.deadline:
            await self.audit.begin(command_id=command_id, actor=actor, command=f"/{p.verb}", args=[p.reason],
                                   authorized=True, outcome="expired", detail="confirmation expired")
            return "expired", p.verb, f"not confirmed within {CONFIRM_WINDOW_S:.0f} s; nothing was done"
        await self.audit.begin(command_id=command_id, actor=actor, command=f"/{p.verb}",
                               args=[p.reason] if p.reason else [], authorized=True)
        payload = {"reason": p.reason or "operator (dashboard)"} if p.verb == "pause" else {}
        try:
            await self.ask("executor", p.verb, payload)
        except CommandError as e:
            detail = f"{e.code}: {redact_text(str(e))}"
            await self.audit.finish(command_id, "error", detail)
            log.warning("dashboard_control_failed", verb=p.verb, actor=actor, error=detail)
            return "error", p.verb, detail
        done = VERBS[p.verb][2]
        await self.audit.finish(command_id, "ok", (f"paused: {p.reason}" if p.verb == "pause" and p.reason
                                                   else done))
        log.warning("dashboard_control", verb=p.verb, actor=actor, reason=p.reason)
        return "ok", p.verb, done


def scrub(body: bytes, tokens: tuple[str, ...]) -> bytes:
    """`body` with every configured token replaced (the last line of defence: none is ever put in one)."""
    for t in tokens:
        body = body.replace(t.encode(), b"***")
    return body


def create_app(*, mode: str, access: Access, builder: PageBuilder, controls: Controls | None,
               refresh_s: float, host: str = "127.0.0.1") -> Starlette:
    """The ASGI app of one dashboard bound to `host`."""
    env = builder.env
    label = MODE_LABEL.get(mode, mode.upper())
    tokens = access.secrets()
    can_steer = controls is not None and access.controls
    stats = {"pages": 0, "api": 0, "denied": 0}

    def role_of(request: Request) -> Role | None:
        return access.role(cookie=request.cookies.get(COOKIE), authorization=request.headers.get("authorization"))

    def session_of(request: Request) -> str:
        token = request.cookies.get(COOKIE) or request.headers.get("authorization") or ""
        return hashlib.sha256(token.encode()).hexdigest()

    def actor_of(request: Request, role: Role | None) -> str:
        return f"web:{role or 'anonymous'}@{request.client.host if request.client else '?'}"

    def html(request: Request, name: str, status: int = 200, *, role: Role | None = None, **ctx: Any) -> Response:
        signed_in = access.role_for_cookie(request.cookies.get(COOKIE)) is not None
        body = env.get_template(name).render(mode=mode, label=label, role=role, signed_in=signed_in,
                                             can_sign_in=access.login_required or can_steer, **ctx)
        return Response(scrub(body.encode(), tokens), status_code=status, media_type="text/html; charset=utf-8")

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return {}
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}

    async def index(request: Request) -> Response:
        role = role_of(request)
        if role is None:
            return RedirectResponse("/login", status_code=303)
        stats["pages"] += 1
        page = await builder.build()
        return html(request, "index.html", role=role, page=page, refresh_s=f"{refresh_s:g}",
                    refresh_ms=int(refresh_s * 1000), controls=can_steer and role == "operator")

    async def api_page(request: Request) -> Response:
        if role_of(request) is None:
            stats["denied"] += 1
            return JSONResponse({"error": "login required: present KDESK_DASHBOARD_TOKEN at /login or as "
                                          "'Authorization: Bearer <token>'"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        stats["api"] += 1
        page = await builder.build()
        body = orjson.dumps({
            "mode": page.mode, "generated_at": page.generated_at.isoformat(), "refresh_s": refresh_s,
            "took_ms": round(page.took_ms, 2), "errors": page.errors, "ages_s": page.ages_s, "panels": page.panels,
            "charts": {k: {"v": c.version, "into": c.into, "figure": orjson.Fragment(c.figure)}
                       for k, c in page.charts.items()}})
        return Response(scrub(body, tokens), media_type="application/json")

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True, "mode": mode})

    async def login_page(request: Request) -> Response:
        if not (access.login_required or access.controls):
            return RedirectResponse("/", status_code=303)
        return html(request, "login.html", role=role_of(request), title="log in", failed=False,
                    operator_only=not access.login_required)

    async def login(request: Request) -> Response:
        token = (await form(request)).get("token", "")
        role = access.role_for_token(token) if token else None
        if role is None:
            stats["denied"] += 1
            log.warning("dashboard_login_refused", client=request.client.host if request.client else None)
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            return html(request, "login.html", 401, role=None, title="log in", failed=True,
                        operator_only=not access.login_required)
        log.info("dashboard_login", role=role, client=request.client.host if request.client else None)
        out = RedirectResponse("/", status_code=303)
        out.set_cookie(COOKIE, access.cookie_for(role), max_age=int(SESSION_S), httponly=True, samesite="strict",
                       secure=request.url.scheme == "https", path="/")
        return out

    async def logout(_: Request) -> Response:
        out = RedirectResponse("/login" if access.login_required else "/", status_code=303)
        out.delete_cookie(COOKIE, path="/")
        return out

    async def refused(request: Request, verb: str, role: Role | None) -> Response:
        stats["denied"] += 1
        why = "no operator token is configured" if not can_steer else "needs the operator token"
        if controls is not None:
            await controls.refuse(verb, actor_of(request, role), why)
        log.warning("dashboard_control_refused", verb=verb, role=role, why=why)
        return html(request, "result.html", 403, role=role, title="not allowed", kind="error", outcome="denied",
                    headline=f"{verb} needs an operator", detail=f"Refused: {why}. Nothing was done.")

    async def control(request: Request) -> Response:
        verb = request.path_params["verb"]
        if verb not in VERBS:
            return html(request, "result.html", 404, role=role_of(request), title="unknown", kind="error",
                        outcome="error", headline=f"no control {verb!r}",
                        detail="The dashboard offers pause and resume.")
        role = role_of(request)
        if role != "operator" or not can_steer:
            return await refused(request, verb, role)
        assert controls is not None
        reason = " ".join((await form(request)).get("reason", "").split())[:200]
        nonce = await controls.ask_for(verb, reason, session=session_of(request), actor=actor_of(request, role))
        title, what, _ = VERBS[verb]
        return html(request, "confirm.html", role=role, title="confirm", verb=title, what=what, reason=reason,
                    nonce=nonce, window_s=f"{CONFIRM_WINDOW_S:.0f}")

    async def confirm(request: Request) -> Response:
        role = role_of(request)
        if role != "operator" or not can_steer:
            return await refused(request, "confirm", role)
        assert controls is not None
        nonce = (await form(request)).get("nonce", "")
        outcome, verb, detail = await controls.confirm(nonce, session=session_of(request),
                                                       actor=actor_of(request, role))
        headline = {"ok": detail, "error": f"{verb} failed", "expired": "nothing was done"}[outcome]
        status = {"ok": 200, "error": 502, "expired": 409}[outcome]
        return html(request, "result.html", status, role=role, title=verb or "confirm",
                    kind="ok" if outcome == "ok" else "error", outcome=outcome, headline=headline,
                    detail=None if outcome == "ok" else detail)

    async def plotly_js(_: Request) -> Response:
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"cache-control": "max-age=86400"})

    app = Starlette(routes=[
        Route("/", index), Route("/api/page", api_page), Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/control/confirm", confirm, methods=["POST"]), Route("/control/{verb}", control, methods=["POST"]),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=STATIC)),
    ])
    app.state.stats = stats
    # No login (loopback only): the Host must be this machine's, or what the dashboard was bound to.
    allowed = None if access.login_required else LOOPBACK_NAMES | {host_of(host)}
    app.add_middleware(SecurityHeaders, allowed_hosts=allowed)  # type: ignore[arg-type]
    return app


__all__ = ["PLOTLY_JS", "VERBS", "Controls", "Pending", "SecurityHeaders", "create_app", "host_of", "scrub",
           "templates"]
