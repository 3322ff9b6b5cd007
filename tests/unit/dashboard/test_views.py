"""The app's pages and data over HTTP (httpx's ASGI transport): what is shown, to whom, and what never is."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from libs.common.config import Mode
from libs.common.display import usd
from libs.common.events import Alert
from services.dashboard.access import COOKIE, Access
from services.dashboard.app import PLOTLY_JS, create_app, templates
from services.dashboard.page import PageBuilder
from tests.unit.dashboard.desk import EVENT, NOW, StaticDesk

VIEW = "viewer-token-0123456789"
OPER = "operator-token-0123456789"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def client(desk: StaticDesk, access: Access) -> httpx.AsyncClient:
    app = create_app(mode=desk.mode, access=access, builder=PageBuilder(templates(), desk, clock=lambda: NOW),
                     controls=None, refresh_s=2.0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)),
                             base_url="http://127.0.0.1:8765")


@pytest.fixture
async def open_page() -> AsyncIterator[tuple[httpx.AsyncClient, StaticDesk]]:
    """A loopback dashboard with no tokens (the default)."""
    desk = StaticDesk()
    async with client(desk, Access(None, None)) as c:
        yield c, desk


async def test_the_page_shows_every_panel_in_dollars_with_the_mode(open_page: tuple[httpx.AsyncClient,
                                                                                     StaticDesk]) -> None:
    c, _ = open_page
    r = await c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<title>[SIM] kdesk</title>" in page and 'id="mode" class="mode mode-sim" data-mode="sim"' in page
    for panel in ("banner", "health", "pnl", "positions", "orders", "fills", "signals", "accuracy", "alerts"):
        assert f'data-panel="{panel}"' in page
    assert '<dd id="pnl-realized" data-ticks="3300">+0.33</dd>' in page
    assert f'data-event="{EVENT}"' in page and f'data-ticker="{EVENT}-B52.5"' in page
    assert '<td class="num cost">$2.10</td>' in page and "45.00¢" in page
    assert "declined: cap_event" in page and 'data-fill-id="t9:o1"' in page
    assert 'data-service="feeds"' in page and 'data-service="resolver" data-status="silent"' in page
    assert "21000" not in re.sub(r'data-[a-z-]+="[^"]*"', "", page), "ticks appear only in data attributes"
    assert "/static/plotly.min.js" in page and "cdn" not in page.lower()
    assert 'id="controls"' not in page, "no operator token: no controls"


async def test_page_data_is_the_same_panels_and_the_charts(open_page: tuple[httpx.AsyncClient, StaticDesk]) -> None:
    c, desk = open_page
    r = await c.get("/api/page")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    d = r.json()
    assert d["mode"] == "sim" and set(d["panels"]) == {"banner", "health", "pnl", "positions", "orders", "fills",
                                                       "signals", "llm", "accuracy", "alerts"}
    assert set(d["charts"]) == {"equity", "daily", "cal-weather"}
    equity = d["charts"]["equity"]["figure"]["data"][0]
    assert equity["y"][0] == 1000.0 and equity["y"][-1] == 1001.5, "dollars of the executor's equity ticks"
    assert d["charts"]["daily"]["figure"]["data"][0]["y"] == [1.0, -1.2345]
    cal = d["charts"]["cal-weather"]["figure"]["data"][1]
    assert cal["x"] == pytest.approx([0.05, 0.35, 0.65, 0.95]) and d["charts"]["cal-weather"]["into"] == "cal-charts"
    # Unchanged answers keep their chart versions (the browser redraws nothing); a new answer moves them.
    again = (await c.get("/api/page")).json()
    assert again["charts"]["equity"]["v"] == d["charts"]["equity"]["v"]
    desk.values["pnl"]["equity"].append({"ts": NOW.isoformat(), "equity_ticks": 10_100_000})
    desk.bump("pnl")
    moved = (await c.get("/api/page")).json()
    assert moved["charts"]["equity"]["v"] != d["charts"]["equity"]["v"]
    assert moved["charts"]["equity"]["figure"]["data"][0]["y"][-1] == 1010.0
    assert moved["charts"]["cal-weather"]["v"] == d["charts"]["cal-weather"]["v"]


async def test_a_new_fill_shows_on_the_next_poll(open_page: tuple[httpx.AsyncClient, StaticDesk]) -> None:
    c, desk = open_page
    before = (await c.get("/api/page")).json()["panels"]["fills"]
    assert "t10:o3" not in before
    desk.values["fills"].insert(0, {"fill_id": "t10:o3", "order_id": "o3", "ticker": f"{EVENT}-B56.5",
                                    "outcome_side": "yes", "yes_price": 3_100, "count": 200, "fee_ticks": 0,
                                    "is_taker": False, "filled_at": NOW.isoformat()})
    after = (await c.get("/api/page")).json()["panels"]["fills"]
    assert after.index('data-fill-id="t10:o3"') < after.index('data-fill-id="t9:o1"'), "newest first"


async def test_a_service_that_does_not_answer_is_said_not_hidden(open_page: tuple[httpx.AsyncClient,
                                                                                   StaticDesk]) -> None:
    c, desk = open_page
    del desk.values["positions"]
    desk.errors["positions"] = "unavailable: no executor instance is running in sim mode"
    desk.values["status"] = None
    desk.errors["status"] = "timeout: executor did not answer 'status' within 5 s"
    d = (await c.get("/api/page")).json()
    assert "positions unavailable: unavailable: no executor instance" in d["panels"]["positions"]
    assert "executor not answering (timeout" in d["panels"]["banner"]
    assert d["errors"]["positions"].startswith("unavailable")


async def test_no_login_needed_on_loopback_without_a_token(open_page: tuple[httpx.AsyncClient, StaticDesk]) -> None:
    c, _ = open_page
    assert (await c.get("/login")).status_code == 303, "nothing to log in to"
    assert (await c.post("/control/pause")).status_code == 403, "no operator token: nobody steers"


async def test_without_a_login_another_site_s_name_for_this_machine_is_refused(
        open_page: tuple[httpx.AsyncClient, StaticDesk]) -> None:
    """DNS rebinding: a page elsewhere points its own name at 127.0.0.1; the Host header gives it away."""
    c, desk = open_page
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):
        r = await c.get("/api/page", headers={"host": host})
        assert r.status_code == 421 and EVENT not in r.text
    assert desk.asked == 0
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert (await c.get("/api/page", headers={"host": host})).status_code == 200


async def test_with_a_login_token_nothing_is_shown_without_it() -> None:
    desk = StaticDesk()
    async with client(desk, Access(VIEW, OPER)) as c:
        r = await c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        api = await c.get("/api/page")
        assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
        assert EVENT not in api.text and "ticks" not in api.text
        assert (await c.get("/api/page", headers={"authorization": "Bearer wrong-token-0123456789"})).status_code == 401
        login = await c.get("/login")
        assert login.status_code == 200 and 'data-mode="sim"' in login.text and 'name="token"' in login.text
        bad = await c.post("/login", content="token=wrong-token-0123456789",
                           headers=FORM)
        assert bad.status_code == 401 and "That token is not valid" in bad.text and COOKIE not in bad.headers.get(
            "set-cookie", "")
        assert desk.asked == 0, "no answer was even asked for"
        # A script: the bearer token; a browser: the login form, then the cookie.
        assert (await c.get("/api/page", headers={"authorization": f"Bearer {VIEW}"})).status_code == 200
        ok = await c.post("/login", content=f"token={VIEW}", headers=FORM)
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and VIEW not in cookie
        page = await c.get("/")
        assert page.status_code == 200 and 'data-role="viewer"' in page.text and 'id="controls"' not in page.text
        # A viewer cannot steer.
        assert (await c.post("/control/pause", content="reason=x")).status_code == 403
        out = await c.post("/logout")
        assert out.status_code == 303
        assert (await c.get("/api/page")).status_code == 401


async def test_the_operator_token_shows_the_controls() -> None:
    from services.dashboard.app import Controls

    desk = StaticDesk()
    access = Access(VIEW, OPER)

    async def never(*_: object) -> object:
        raise AssertionError("not sent")

    app = create_app(mode="sim", access=access, builder=PageBuilder(templates(), desk, clock=lambda: NOW),
                     controls=Controls(never, None), refresh_s=2.0)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8765") as c:
        await c.post("/login", content=f"token={OPER}", headers=FORM)
        page = (await c.get("/")).text
        assert 'data-role="operator"' in page and 'id="pause-button"' in page and 'id="resume-button"' in page


async def test_no_secret_is_ever_rendered() -> None:
    desk = StaticDesk()
    desk.alerts.append(Alert(ts_event=NOW, mode=Mode.SIM, family="feed", severity="warning", dedupe_key="k",
                             title=f"someone pasted {OPER} here", detail=f"and {VIEW}, and postgresql://u:pw@h/db"))
    desk.values["status"]["pause_reason"] = OPER
    desk.values["status"]["paused"] = True
    async with client(desk, Access(VIEW, OPER)) as c:
        auth = {"authorization": f"Bearer {VIEW}"}
        for path in ("/", "/api/page"):
            body = (await c.get(path, headers=auth)).text
            assert OPER not in body and VIEW not in body and ":pw@" not in body
            assert "someone pasted *** here" in body


async def test_every_view_carries_the_mode_and_live_is_loud() -> None:
    desk = StaticDesk(mode="live")
    async with client(desk, Access(VIEW, None)) as c:
        login = await c.get("/login")
        assert "[LIVE]" in login.text and 'class="mode-live"' in login.text
        page = await c.get("/", headers={"authorization": f"Bearer {VIEW}"})
        assert "<title>[LIVE] kdesk</title>" in page.text and "⚠ LIVE" in page.text
        data = await c.get("/api/page", headers={"authorization": f"Bearer {VIEW}"})
        assert json.loads(data.text)["mode"] == "live"
        refused = await c.post("/control/pause", headers={"authorization": f"Bearer {VIEW}"})
        assert refused.status_code == 403 and "[LIVE]" in refused.text


async def test_security_headers_and_the_offline_plotly(open_page: tuple[httpx.AsyncClient, StaticDesk]) -> None:
    c, _ = open_page
    r = await c.get("/")
    assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    js = await c.get("/static/plotly.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.content[:40] == PLOTLY_JS.read_bytes()[:40] and b"plotly.js v" in js.content[:100]
    assert (await c.get("/static/dashboard.js")).status_code == 200
    assert (await c.get("/healthz")).json() == {"ok": True, "mode": "sim"}
    assert usd(12_345) == "$1.23"
