"""The dashboard in a real browser: `kdesk up` in sim, Debian's headless Chromium driven by selenium.

The desk is bound beyond loopback (0.0.0.0, with both tokens), so the page must refuse whoever has no token;
the browser logs in with the operator token and the test checks, against the executor's own `cmd.*` answers
and the ledger's rows, that the P&L, the positions and the health shown are the desk's; that a fill the desk
makes while the page is open appears without a reload; and that pause and resume from the page go through
their confirmation, reach the executor and are audited. `KDESK_DASHBOARD_SCREENSHOT=docs/dashboard.png` also
saves the page as the README's picture.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.display import contracts, usd
from libs.common.events import Heartbeat
from libs.common.health import judge
from services.dashboard.address import free_port
from tests.kit.up import start_up

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
VIEW = "e2e-viewer-token-0123456789"
OPER = "e2e-operator-token-0123456789"
T = TypeVar("T")
SCREENSHOT_POINTS = 2  # equity points (the executor's curve: a bucket's first snapshot and the newest) for the picture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


def _click_to_next_page(browser: Any, button: str) -> None:
    """Click the button (or link) `button` and wait until the page it leads to has loaded. A click returns
    before the navigation commits: an element looked up straight after it can be the old page's (the index's
    first h2 is "control"), which goes stale under the caller a moment later — the 'stale element reference'
    seen about one clean-clone run in five. Waiting on an element handle of the old page is no better (Chrome
    answers 'Node with given id does not belong to the document' mid-navigation), so the old document is
    marked with a script variable instead: a navigation gives the page a new window, without the mark."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    def arrived() -> bool:
        try:
            return bool(browser.execute_script("return !window.__kdeskLeaving && document.readyState === 'complete';"))
        except WebDriverException:  # a script run into the moment the old document unloads
            return False

    browser.execute_script("window.__kdeskLeaving = true;")
    browser.find_element(By.ID, button).click()
    _eventually(f"the page after {button}", arrived, 30, every=0.1)


def _fill_and_submit(browser: Any, field: str, text: str, button: str) -> None:
    """Type into the form field named `field`, click the button `button` and wait for the next page."""
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.NAME, field)
    box.clear()
    box.send_keys(text)
    _click_to_next_page(browser, button)


def _eventually(what: str, fn: Callable[[], T | None], timeout: float = 90.0, every: float = 0.5) -> T:
    """Call `fn` until it returns something (not None or False); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            got = fn()
        except AssertionError as e:  # a comparison that does not hold yet: keep its message for the failure
            got, last = None, e
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {last}" if last else ""))
        time.sleep(every)


class Desk:
    """The running desk as the test reads it: `cmd.*` requests over its NATS, rows of its PostgreSQL."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.nats_url = run["nats_url"]
        self.db_url = run["database_url"].replace("postgresql+psycopg", "postgresql")

    def ask(self, service: str, verb: str, payload: dict[str, Any] | None = None) -> Any:
        async def go() -> Any:
            bus = await Bus.connect(self.nats_url, service="e2e", mode=Mode.SIM, initial_attempts=3)
            try:
                return await bus.request(service, verb, payload or {}, timeout=15.0)
            finally:
                await bus.close()

        return asyncio.run(go())

    def heartbeats(self, wait_s: float = 6.0) -> dict[str, Heartbeat]:
        """The newest heartbeat of each service instance heard within `wait_s`."""
        async def go() -> dict[str, Heartbeat]:
            bus = await Bus.connect(self.nats_url, service="e2e", mode=Mode.SIM, initial_attempts=3)
            beats: dict[str, Heartbeat] = {}

            async def on(hb: Heartbeat) -> None:
                beats[f"{hb.service}/{hb.instance}"] = hb

            try:
                await bus.subscribe(subjects.ops_health_all(), Heartbeat, on)
                await asyncio.sleep(wait_s)
                return beats
            finally:
                await bus.close()

        return asyncio.run(go())

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url) as conn:
            return conn.execute(sql, params or None).fetchall()


class Wiretap(threading.Thread):
    """Every answer the executor gives, to anyone (the dashboard included), as it goes over NATS.

    A second NATS connection hears each `cmd.executor.*` request (a plain subscriber, outside the executor's
    queue group: it never answers) and the replies on the requesters' inboxes; so the test can tell that a
    number the page shows is exactly one the executor answered, even while marks move with the books.
    """

    def __init__(self, nats_url: str) -> None:
        super().__init__(daemon=True)
        self.nats_url = nats_url
        self.answers: dict[str, list[Any]] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import nats
        import orjson

        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        nc = await nats.connect(self.nats_url)
        asked: dict[str, str] = {}

        async def on_request(msg: Any) -> None:
            if msg.reply:
                asked[msg.reply] = msg.subject.rsplit(".", 1)[1]

        async def on_reply(msg: Any) -> None:
            verb = asked.pop(msg.subject, None)
            reply = orjson.loads(msg.data) if verb else None
            if reply and reply.get("ok"):
                with self.lock:
                    self.answers.setdefault(verb, []).append(reply["data"])  # type: ignore[arg-type]

        await nc.subscribe(subjects.scoped("sim", "cmd.executor.*"), cb=on_request)
        await nc.subscribe("_INBOX.>", cb=on_reply)
        await nc.flush()
        self.ready.set()
        await self._done.wait()
        await nc.close()

    def given(self, verb: str) -> list[Any]:
        """The answers to `verb` so far, oldest first."""
        with self.lock:
            return list(self.answers.get(verb, []))

    def stop(self) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium from the system packages (`make test` installs them), through its matching driver."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1360,1900", "--hide-scrollbars", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.implicitly_wait(15)  # a click on a form's button returns before the next page has loaded
    try:
        yield driver
    finally:
        driver.quit()


def _stop(proc: subprocess.Popen[str], drain: threading.Thread) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    drain.join(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def _kdesk(var: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
    env["KDESK_VAR_DIR"] = str(var)
    return subprocess.run([sys.executable, "-m", "services.ctl", *args], env=env, capture_output=True, text=True,
                          timeout=90, check=False)


def _save_screenshot(png: bytes, tmp_path: Path) -> None:
    """Keep the page's picture with the test's files; also as a small PNG where KDESK_DASHBOARD_SCREENSHOT says."""
    (tmp_path / "dashboard.png").write_bytes(png)
    target = os.environ.get("KDESK_DASHBOARD_SCREENSHOT")
    if not target:
        return
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def test_the_page_shows_the_desk_s_numbers_live_and_refuses_strangers(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    var = tmp_path / "var"
    port = free_port("0.0.0.0")
    proc, out = start_up(var, KDESK_DASHBOARD_HOST="0.0.0.0", KDESK_DASHBOARD_PORT=str(port),
                         KDESK_DASHBOARD_TOKEN=VIEW, KDESK_DASHBOARD_OPERATOR_TOKEN=OPER, KDESK_DASHBOARD_REFRESH_S="1")
    drain = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    drain.start()
    base = f"http://127.0.0.1:{port}"
    try:
        # 1. `kdesk up` says where the page is and that it needs a login.
        shown = "".join(out)
        assert f"[kdesk] dashboard {base}/  (bound to 0.0.0.0; login token required; pause/resume with the " \
               "operator token)" in shown, shown[-3000:]
        assert VIEW not in shown and OPER not in shown
        run = json.loads((var / "run.json").read_text())
        assert VIEW not in json.dumps(run) and OPER not in json.dumps(run)
        desk = Desk(run)
        tap = Wiretap(desk.nats_url)
        tap.start()
        assert tap.ready.wait(20)
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
            _eventually("the dashboard answering", lambda: _up(http), 90)

            # 2. Bound beyond localhost: nothing without the token.
            api = http.get("/api/page")
            assert api.status_code == 401 and "KX" not in api.text and "ticks" not in api.text
            page = http.get("/")
            assert page.status_code == 303 and page.headers["location"] == "/login"
            assert http.get("/api/page", headers={"authorization": "Bearer not-the-token-0123456789"}
                            ).status_code == 401
            assert http.get("/api/page", headers={"authorization": f"Bearer {VIEW}"}).status_code == 200

        # 3. The browser logs in with the operator's token.
        browser.get(base + "/")
        assert browser.current_url == base + "/login"
        assert browser.find_element(By.ID, "mode").text == "SIM"
        browser.find_element(By.ID, "token").send_keys(OPER)
        _click_to_next_page(browser, "login-button")
        _eventually("the dashboard after the login", lambda: browser.current_url == base + "/", 20)
        assert browser.title == "[SIM] kdesk" and browser.find_element(By.ID, "role").text == "operator"
        root = browser.find_element(By.ID, "dashboard")
        _eventually("the page's first poll", lambda: int(root.get_attribute("data-polls") or 0) >= 1, 30)

        # 4. A fill the desk makes while the page is open appears without a reload.
        browser.execute_script("window.__kdeskNoReload = 42;")
        first = _eventually("fills on the page", lambda: _fill_ids(browser) or None, 120)
        new = _eventually("a new fill on the open page",
                          lambda: (set(_fill_ids(browser)) - set(first)) or None, 150)
        assert browser.execute_script("return window.__kdeskNoReload") == 42, "the page was reloaded"
        stored = {f for (f,) in desk.rows("SELECT fill_id FROM fills WHERE mode = 'sim'")}
        assert new <= stored, f"fills shown that the ledger does not have: {new - stored}"
        _eventually("the equity chart drawn", lambda: browser.execute_script(
            "return document.querySelectorAll('#chart-equity .main-svg').length") or None, 30)
        if os.environ.get("KDESK_DASHBOARD_SCREENSHOT"):  # the README's picture: a curve, not a dot
            _eventually("a few equity points", lambda: (browser.execute_script(
                "const e = document.getElementById('chart-equity'); return e.data ? e.data[0].y.length : 0;")
                or 0) >= SCREENSHOT_POINTS, 120, every=2)
        _save_screenshot(browser.get_screenshot_as_png(), tmp_path)

        # 5. Health as `kdesk health` judges each heartbeat, per service and per feed input.
        def health_matches() -> bool:
            beats = desk.heartbeats()
            rows = {f"{r['service']}/{r['instance']}": (r["healthy"], set(r["inputs"])) for r in browser.execute_script(
                "return Array.from(document.querySelectorAll('table.health tr[data-instance]')).map(r => ({"
                "service: r.dataset.service, instance: r.dataset.instance, healthy: r.dataset.healthy === 'true',"
                "inputs: Array.from(r.querySelectorAll('[data-input]')).map(c => c.dataset.input)}))")}
            want = {k: (judge(b)[0], set(b.inputs)) for k, b in beats.items()}
            assert rows == want, f"page {rows} != heartbeats {want}"
            return True

        _eventually("the health shown to match the heartbeats", health_matches, 60, every=1)
        services = set(browser.execute_script("return Array.from(document.querySelectorAll("
                                              "'table.health tr[data-service]')).map(r => r.dataset.service)"))
        assert {"feeds", "signals", "executor", "resolver", "notifier", "dashboard"} <= services
        assert browser.execute_script("return document.querySelectorAll('table.health tr[data-service=\"feeds\"] "
                                      "[data-input=\"kalshi_ws\"]').length"), "per-feed freshness"
        assert _kdesk(var, "health", "dashboard").returncode == 0

        # 6. Pause from the page: a confirmation, then the executor pauses; both steps audited.
        _fill_and_submit(browser, "reason", "e2e browser", "pause-button")
        assert "Pause trading in SIM?" in browser.find_element(By.TAG_NAME, "h2").text
        assert desk.ask("executor", "status")["paused"] is False, "nothing happens before the confirmation"
        _click_to_next_page(browser, "confirm-button")
        assert browser.find_element(By.ID, "result").get_attribute("data-outcome") == "ok"
        st = desk.ask("executor", "status")
        assert st["paused"] is True and st["pause_reason"] == "e2e browser"
        audit = desk.rows("SELECT command, outcome, authorized, actor FROM command_audit WHERE command_id LIKE %s "
                          "ORDER BY id", "web:%")
        assert audit == [("/pause", "awaiting_confirmation", True, "web:operator@127.0.0.1"),
                         ("/pause", "ok", True, "web:operator@127.0.0.1")]
        _click_to_next_page(browser, "back-link")
        _eventually("the banner to say PAUSED", lambda: browser.execute_script(
            "const t = document.getElementById('trading'); return t && t.dataset.state === 'paused';"), 30)

        # 7. Paused (resting orders canceled, nothing new sent): the page's positions and P&L are, to the tick,
        # answers the executor gave, and those answers are the ledger's rows.
        _eventually("the pause to cancel every resting order",
                    lambda: not desk.ask("executor", "orders", {"open": True}), 60)
        _eventually("the positions shown to be the executor's and the ledger's",
                    lambda: _positions_match(browser, desk, tap), 60, every=1)
        _eventually("the P&L shown to be the executor's and the ledger's",
                    lambda: _pnl_matches(browser, desk, tap), 60, every=1)

        # 8. Resume from the page.
        _click_to_next_page(browser, "resume-button")
        _click_to_next_page(browser, "confirm-button")
        assert browser.find_element(By.ID, "result").get_attribute("data-outcome") == "ok"
        assert desk.ask("executor", "status")["paused"] is False
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, f"the browser's console reported errors: {severe}"
    finally:
        if "tap" in locals():
            tap.stop()
        _stop(proc, drain)
    text = "".join(out)
    assert VIEW not in text and OPER not in text, "a token reached the desk's output"
    assert not (var / "run.json").exists()


def _up(http: httpx.Client) -> bool | None:
    try:
        return http.get("/healthz").status_code == 200 or None
    except httpx.HTTPError:
        return None


def _fill_ids(browser: Any) -> list[str]:
    # Read in one script: the page swaps its panels under us, so element handles go stale between calls.
    return browser.execute_script(  # type: ignore[no-any-return]
        "return Array.from(document.querySelectorAll('tr.fill')).map(r => r.dataset.fillId)")


def _positions_match(browser: Any, desk: Desk, tap: Wiretap) -> bool:
    """The rows shown (position, cost, mark, unrealized; contracts and dollars as text) are one
    `cmd.executor.positions` answer exactly, grouped by event; its positions and costs are the ledger's."""
    def opt(v: str | None) -> int | None:
        return int(v) if v else None

    view = browser.execute_script(
        "return {events: Array.from(document.querySelectorAll('tbody.event')).map(e => e.dataset.event),"
        "rows: Array.from(document.querySelectorAll('tr.position')).map(r => ({d: Object.assign({}, r.dataset),"
        "contracts: r.querySelector('td.contracts').textContent, cost: r.querySelector('td.cost').textContent}))}")
    shown = {r["d"]["ticker"]: (int(r["d"]["position"]), int(r["d"]["cost"]), opt(r["d"]["mark"]),
                                opt(r["d"]["unrealized"])) for r in view["rows"]}
    texts = {r["d"]["ticker"]: (r["contracts"], r["cost"]) for r in view["rows"]}
    ledger = {t: (p, c) for t, p, c in desk.rows(
        "SELECT ticker, position, cost_ticks FROM positions WHERE mode = 'sim' AND position <> 0")}
    assert ledger, "the desk holds no position yet"
    answers = [{p["ticker"]: (p["position"], p["cost_ticks"], p["mark_ticks"], p["unrealized_pnl_ticks"]) for p in a}
               for a in tap.given("positions")[-50:]]
    assert shown in answers, f"the page shows {shown}, which no recent executor answer said"
    assert {t: v[:2] for t, v in shown.items()} == ledger, f"page {shown} / ledger {ledger}"
    assert texts == {t: (contracts(abs(p)), usd(c)) for t, (p, c) in ledger.items()}, "dollars and contracts"
    assert set(view["events"]) == {t.rsplit("-", 1)[0] for t in ledger}, "grouped by event"
    return True


def _pnl_matches(browser: Any, desk: Desk, tap: Wiretap) -> bool:
    """Today, realized, unrealized, fees and the families shown are one `cmd.executor.pnl` answer exactly (in
    dollars as text too); its realized and fees are the ledger's sums, its equity curve the balance snapshots."""
    view = browser.execute_script(
        "const cell = id => { const el = document.getElementById(id); return [el.dataset.ticks, el.textContent]; };"
        "const eq = document.getElementById('chart-equity');"
        "return {today: cell('pnl-today'), realized: cell('pnl-realized'), unrealized: cell('pnl-unrealized'),"
        "fees: cell('pnl-fees'), drawn: eq && eq.data && eq.data[0] ? eq.data[0].y : null,"
        "families: Array.from(document.querySelectorAll('#pnl-families tr[data-family]')).map(r => [r.dataset.family,"
        "Array.from(r.querySelectorAll('td[data-ticks]')).map(c => Number(c.dataset.ticks))])}")

    def cell(name: str) -> tuple[int | None, str]:
        ticks, text = view[name]
        return (int(ticks) if ticks else None), text

    today, realized, unrealized, fees = (cell(n) for n in ("today", "realized", "unrealized", "fees"))
    families = {f: tuple(v) for f, v in view["families"]}
    shown = (today[0], realized[0], unrealized[0], fees[0], families)
    answers = [(a["today_pnl_ticks"], a["realized_ticks"], a["unrealized_ticks"], a["fees_ticks"],
                {f: (v["realized_ticks"], v["unrealized_ticks"], v["fees_ticks"]) for f, v in a["by_family"].items()},
                a) for a in tap.given("pnl")[-50:]]
    match = [a for a in answers if a[:5] == shown]
    assert match, f"the page shows {shown}, which no recent executor answer said"
    answer = match[-1][5]
    assert (realized[1], unrealized[1], fees[1]) == (usd(realized[0], sign=True), usd(unrealized[0], sign=True),
                                                     usd(fees[0]))
    [(ledger_realized, ledger_fees)] = desk.rows(
        "SELECT coalesce(sum(realized_pnl_ticks), 0), coalesce(sum(fees_paid_ticks), 0) FROM positions "
        "WHERE mode = 'sim'")
    assert (realized[0], fees[0]) == (ledger_realized, ledger_fees), "realized and fees are the ledger's"
    # The equity curve drawn is the answer's, and its last point is the newest balance snapshot it saw.
    drawn = view["drawn"]
    assert drawn and drawn[-1] == answer["equity"][-1]["equity_ticks"] / 10_000
    [(snapshot,)] = desk.rows("SELECT balance_ticks + coalesce(portfolio_value_ticks, 0) FROM balance_snapshots "
                              "WHERE mode = 'sim' AND ts <= %s ORDER BY ts DESC LIMIT 1",
                              datetime.fromisoformat(answer["as_of"]))
    assert snapshot == answer["equity"][-1]["equity_ticks"], "the curve ends at the ledger's newest snapshot"
    return True
