"""The fault campaign (issue 18): the desk as processes, seeded faults for a while, then quiesce and check.

1. Start NATS, PostgreSQL, the simulator (background traders keep the books moving; the crowd's prices lag the
   truth, so the desk finds edges and trades) and every service, and wait until each reports healthy.
2. For `duration_s`, inject faults drawn from a seeded schedule (`FAULT_KINDS`): every kind comes once per round
   in a shuffled order, with random gaps, so a short run still sees each kind. Killed processes are started
   again after a random delay; so is any process that dies on its own (counted as `unplanned_exits`).
   Alongside, alerts are published (each one PubAck'ed by JetStream is expected in the notifier's table and
   delivered to Telegram) and a Telegram user who is nobody's operator sends commands.
3. Quiesce: faults off, every process back and healthy, the desk paused (resting orders cancelled), the
   executor's outbox and every JetStream consumer drained, a reconciliation.
4. Check the invariants against the exchange's own records and the ledger (invariants.py), scan every log line
   and every stored text value for secrets, run the bad-input fuzz campaign (benchmarks/fuzz.py), report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.chaos import invariants as inv
from benchmarks.chaos.stack import CAPS, DESK, INTRUDER, Stack
from libs.common import subjects
from libs.common.config import Mode, usd_to_ticks

SERVICE_KILLS = tuple(f"kill_{n.replace('-', '_')}" for n in DESK)
EXCHANGE_FAULTS = ("ws_cut", "seq_gap", "ws_error_25", "latency", "late_response", "trading_paused",
                   "lost_response", "http_5xx", "timeout", "rate_limit_storm")
SOURCE_FAULTS = ("venue_down", "venue_cut", "venue_garbage", "weather_5xx", "weather_garbage")
FAULT_KINDS = (*SERVICE_KILLS, "kill_executor_in_flight", "nats_restart", "postgres_restart", *EXCHANGE_FAULTS,
               *SOURCE_FAULTS, "telegram_down", "telegram_429")
INTRUDER_COMMANDS = ("/pause intruder", "/resume", "/flatten", "/mode live", "CONFIRM LIVE", "/family btc off",
                     "/llmbudget 1000", "/status")


def _now() -> datetime:
    return datetime.now(UTC)


class Campaign:
    """One run: the stack, the schedule, the counters."""

    def __init__(self, root: Path, *, duration_s: float, seed: int,
                 say: Callable[[str], None] = lambda s: print(s, flush=True)) -> None:
        self.root = root
        self.duration_s = duration_s
        self.seed = seed
        self.rng = random.Random(seed)
        self.say = say
        self.stack = Stack(root, seed=seed)
        self.faults: Counter[str] = Counter()
        self.fault_errors: Counter[str] = Counter()
        self.unplanned_exits: Counter[str] = Counter()
        self.alerts_acked: set[str] = set()
        self.alerts_unacked = 0
        self.intruder_sent = 0
        self.timeline: list[tuple[float, str]] = []
        self._restarts: set[asyncio.Task[None]] = set()
        self._t0 = 0.0
        self._bus: Any = None
        self.health_text: dict[str, str] = {}

    # -- helpers ----------------------------------------------------------------------------------------------

    async def _control(self, body: dict[str, Any], path: str = "/fault") -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(self.stack.control_url + path, json=body)
            out: dict[str, Any] = r.json()
            if "error" in out:
                raise RuntimeError(f"sim control {body}: {out['error']}")
            return out

    async def records(self) -> dict[str, Any]:
        """The exchange's records of the desk's account."""
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.get(self.stack.control_url + "/records", params={"user": "desk"})
            return r.json()  # type: ignore[no-any-return]

    def _restart_later(self, name: str, lo: float = 0.5, hi: float = 4.0) -> None:
        proc = self.stack.procs[name]
        delay = self.rng.uniform(lo, hi)
        proc.restart_at = time.monotonic() + delay

        async def go() -> None:
            await asyncio.sleep(delay)
            if not proc.running:
                await asyncio.to_thread(proc.start)

        task = asyncio.create_task(go())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _kill(self, name: str) -> None:
        await asyncio.to_thread(self.stack.procs[name].kill)
        self._restart_later(name)

    # -- the faults -------------------------------------------------------------------------------------------

    async def inject(self, kind: str) -> None:
        """One fault of `kind`."""
        r = self.rng
        if kind.startswith("kill_") and kind != "kill_executor_in_flight":
            name = kind.removeprefix("kill_").replace("_", "-")
            await self._kill(name)
        elif kind == "kill_executor_in_flight":
            # Answers to order writes arrive late; an executor dies while one is outstanding.
            await self._control({"kind": "late_response", "delay_s": 3.0, "seconds": 4.0})
            await asyncio.sleep(r.uniform(0.5, 2.5))
            await self._kill(r.choice(("executor-1", "executor-2")))
        elif kind == "nats_restart":
            await asyncio.to_thread(self.stack.restart_nats)
        elif kind == "postgres_restart":
            await asyncio.to_thread(self.stack.restart_postgres)
        elif kind == "ws_cut":
            await self._control({"kind": "ws_cut"})
        elif kind == "seq_gap":
            await self._control({"kind": "seq_gap", "times": r.randint(1, 3)})
        elif kind == "ws_error_25":
            await self._control({"kind": "ws_error_25"})
        elif kind == "latency":
            await self._control({"kind": "latency", "latency_s": r.uniform(0.2, 1.5), "seconds": r.uniform(2, 8)})
        elif kind == "late_response":
            await self._control({"kind": "late_response", "delay_s": r.uniform(0.5, 4), "seconds": r.uniform(2, 8)})
        elif kind == "trading_paused":
            await self._control({"kind": "trading_paused", "seconds": r.uniform(2, 10)})
        elif kind == "lost_response":
            for _ in range(r.randint(1, 3)):
                await self._control({"kind": "lost_response", "method": r.choice(("POST", "POST", "DELETE")),
                                     "path": "/portfolio/events/orders" if r.random() < 0.7 else "",
                                     "status": r.choice((502, 503, 504))})
        elif kind == "http_5xx":
            await self._control({"kind": "http_5xx", "times": r.randint(1, 8), "status": r.choice((500, 502, 503)),
                                 "path": r.choice(("", "/portfolio/events/orders", "/portfolio/orders"))})
        elif kind == "timeout":
            # Past the client's 10 s timeout: the order is made, the desk never hears.
            await self._control({"kind": "timeout", "hold_s": 11.0, "times": r.randint(1, 2), "method": "POST",
                                 "path": "/portfolio/events/orders"})
        elif kind == "rate_limit_storm":
            await self._control({"kind": "rate_limit_storm", "seconds": r.uniform(2, 8)})
        elif kind == "venue_down":
            await self._control({"kind": "venue_down", "seconds": r.uniform(3, 15)})
        elif kind in ("venue_cut", "venue_garbage"):
            await self._control({"kind": kind, "times": r.randint(1, 4)})
        elif kind in ("weather_5xx", "weather_garbage"):
            await self._control({"kind": kind, "times": r.randint(1, 6), "status": r.choice((500, 502, 503))})
        elif kind in ("telegram_down", "telegram_429"):
            if kind == "telegram_down":
                await self._control({"kind": "telegram_down", "status": r.choice((500, 502, 503)),
                                     "seconds": r.uniform(3, 10)})
            else:
                await self._control({"kind": "telegram_429", "times": r.randint(3, 10), "retry_after": r.randint(1, 3)})
            await self.alert_burst(r.randint(3, 8))
        else:
            raise ValueError(f"unknown fault kind {kind}")

    # -- alerts and the intruder --------------------------------------------------------------------------------

    async def alert_burst(self, n: int) -> None:
        """Publish `n` distinct alerts; those JetStream acknowledges must reach the notifier's table and Telegram."""
        from libs.common.events import Alert

        if self._bus is None:
            return
        for _ in range(n):
            a = Alert(ts_event=_now(), mode=Mode.SIM, family="chaos", severity="warning",
                      dedupe_key=f"chaos-{secrets.token_hex(6)}", title="chaos drill alert",
                      detail="an alert published by the fault campaign")
            try:
                await self._bus.publish_js(subjects.ops_alert("chaos"), a, timeout=2.0, attempts=2)
                self.alerts_acked.add(a.id)
            except Exception:
                self.alerts_unacked += 1

    async def intruder(self) -> None:
        """A Telegram user who is neither operator nor viewer sends a command."""
        text = self.rng.choice(INTRUDER_COMMANDS)
        with contextlib.suppress(Exception):
            await self._control({"user_id": INTRUDER, "text": text}, "/telegram/message")
            self.intruder_sent += 1

    # -- supervision --------------------------------------------------------------------------------------------

    async def watch(self, stop: asyncio.Event) -> None:
        """Start again any process that died on its own (compose's restart policy), after a random delay."""
        while not stop.is_set():
            for name, p in self.stack.procs.items():
                if p.poll_exit():
                    self.unplanned_exits[name] += 1
                    self.say(f"[chaos] {name} exited on its own (code {p.popen.returncode if p.popen else '?'})")
                    if name != "sim":
                        self._restart_later(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def healthy(self, names: tuple[str, ...] = DESK, timeout: float = 120.0) -> list[str]:
        """Wait until every named process sends a healthy heartbeat; the names that did not."""
        from libs.common.health import check

        deadline = time.monotonic() + timeout
        left = list(names)
        while left and time.monotonic() < deadline:
            for name in list(left):
                service = name.split("-")[0]
                if not self.stack.procs[name].running:
                    self.health_text[name] = "not running"
                    continue
                try:
                    ok, text = await check(self._bus, service, name, wait_s=3.0)
                except Exception as e:
                    ok, text = False, f"{type(e).__name__}: {e}"
                self.health_text[name] = text
                if ok:
                    left.remove(name)
            if left:
                await asyncio.sleep(1.0)
        return left

    # -- the run ------------------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Start, inject, quiesce, check; the report (the stack is stopped on the way out)."""
        from libs.common.bus import Bus

        st = self.stack
        started = time.monotonic()
        await asyncio.to_thread(st.start_infra)
        st.define()
        await asyncio.to_thread(st.start_all)
        self._bus = await Bus.connect(st.nats.url, service="chaos", mode=Mode.SIM)
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(self.watch(stop_watch))
        try:
            not_up = await self.healthy(timeout=150)
            if not_up:
                raise RuntimeError(f"never healthy at start: {not_up}; logs in {st.log_dir}")
            self.say(f"[chaos] desk up in {time.monotonic() - started:.0f}s; injecting faults for "
                     f"{self.duration_s:.0f}s (seed {self.seed})")
            await self.wait_for_trading(90)
            await self.inject_for(self.duration_s)
            report = await self.quiesce_and_check()
        finally:
            stop_watch.set()
            with contextlib.suppress(Exception):
                await watcher
            for t in list(self._restarts):
                t.cancel()
            with contextlib.suppress(Exception):
                await self._bus.close()
            await asyncio.to_thread(st.stop_all)
        report.update(self.scan_logs())
        report["secret_leaks"] = report.pop("_db_leaks", 0) + report["secret_leaks_logs"]
        report["campaign_seconds"] = round(time.monotonic() - started, 1)
        return report

    async def wait_for_trading(self, timeout: float) -> None:
        """Until the exchange has an order from the desk (so faults land on a trading desk)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if (await self.records())["orders"]:
                    return
            await asyncio.sleep(2)
        self.say("[chaos] warning: no order on the exchange yet; injecting anyway")

    async def inject_for(self, duration_s: float) -> None:
        """The seeded schedule: rounds of every kind in shuffled order, random gaps, alerts and intruders between."""
        self._t0 = time.monotonic()
        end = self._t0 + duration_s
        per_round = len(FAULT_KINDS)
        mean_gap = max(0.3, min(4.0, duration_s * 0.6 / per_round))
        queue: list[str] = []
        rounds = 0
        # The first round is always completed, so even a short run injects every kind once.
        while time.monotonic() < end or (rounds == 1 and queue):
            if not queue:
                queue = list(FAULT_KINDS)
                self.rng.shuffle(queue)
                rounds += 1
            kind = queue.pop()
            t = time.monotonic() - self._t0
            try:
                await self.inject(kind)
                self.faults[kind] += 1
                self.timeline.append((round(t, 1), kind))
            except Exception as e:
                self.fault_errors[kind] += 1
                self.say(f"[chaos] fault {kind} failed: {type(e).__name__}: {e}")
            if self.rng.random() < 0.3:
                await self.alert_burst(1)
            if self.rng.random() < 0.25:
                await self.intruder()
            await asyncio.sleep(min(max(0.3, end - time.monotonic()), self.rng.uniform(0.3, 2 * mean_gap - 0.3)))

    async def quiesce_and_check(self) -> dict[str, Any]:
        """Faults off, everyone back, paused, drained, reconciled; then every invariant."""
        st = self.stack
        self.say("[chaos] quiesce: faults off, waiting for restarts")
        with contextlib.suppress(Exception):
            await self._control({}, "/clear")
        if self._restarts:
            await asyncio.wait(list(self._restarts), timeout=30)
        await asyncio.sleep(1)
        not_running = [n for n, p in st.procs.items() if not p.running]
        not_healthy = await self.healthy(timeout=90)
        await self.intruder_final()
        pause = await self._ask("pause", {"reason": "chaos quiesce"})
        drained = await self.drain(90)
        recon = await self._ask("reconcile", {}, timeout=60)
        await asyncio.sleep(3)  # the reconciliation's repairs reach the ledger through the same paths
        drained_after = await self.drain(30)
        records = await self.records()
        ledger = await asyncio.to_thread(self.ledger)
        now = _now()
        caps = {scope: usd_to_ticks(CAPS[f"KDESK_MAX_{scope.upper()}_USD"])
                for scope in ("order", "market", "event", "family", "portfolio")}
        report: dict[str, Any] = {"seed": self.seed, "duration_s": self.duration_s,
                                  "faults_injected": dict(sorted(self.faults.items())),
                                  "faults_injected_total": sum(self.faults.values()),
                                  "fault_errors": dict(self.fault_errors)}
        report.update(inv.duplicate_orders(records["orders"], ledger["orders"], now))
        report.update(inv.lost_fills(records["fills"], ledger["fill_ids"]))
        report.update(inv.ledger_diffs(records["positions"], ledger["positions"], records["markets"]))
        report.update(inv.cap_breaches(records, caps))
        report.update(inv.double_decisions(ledger["orders"]))
        restarts = {n: {"killed": p.killed, "unplanned_exits": p.crashes, "starts": p.starts}
                    for n, p in st.procs.items()}
        report["crashes_not_restarted"] = len(set(not_running) | set(not_healthy))
        report["not_restarted_detail"] = {"not_running": not_running, "not_healthy": not_healthy,
                                          "health": {n: self.health_text.get(n, "") for n in not_healthy}}
        report["unplanned_exits"] = sum(self.unplanned_exits.values())
        report["processes"] = restarts
        stored = set(ledger["alert_ids"])
        report["lost_messages"] = len(self.alerts_acked - stored)
        report["undelivered_alerts"] = ledger["undelivered_alerts"]
        report["alerts_published"] = len(self.alerts_acked)
        report["alerts_unacked_by_jetstream"] = self.alerts_unacked
        # Audit rows of the intruder marked authorized, plus effects seen on the desk (intruder_final).
        report["unauthorized_commands"] = ledger["intruder_authorized"] + self._intruder_effects
        report["intruder_commands_sent"] = self.intruder_sent
        report["intruder_commands_audited"] = ledger["intruder_audited"]
        report["exchange_orders"] = len(records["orders"])
        report["exchange_fills"] = len(records["fills"])
        report["ledger_orders_sent"] = sum(1 for o in ledger["orders"] if o["status"] != "blocked")
        report["ledger_orders_blocked"] = sum(1 for o in ledger["orders"] if o["status"] == "blocked")
        report["quiesce"] = {"paused": bool(pause), "drained": drained, "drained_after_reconcile": drained_after,
                             "reconcile": _short(recon)}
        report["_db_leaks"], report["secret_leaks_db"] = await asyncio.to_thread(self.scan_db)
        return report

    _intruder_effects = 0

    async def intruder_final(self) -> None:
        """The intruder's commands changed nothing: the desk is not paused by them, live is not armed."""
        status = await self._ask("status", {})
        if isinstance(status, dict):
            if status.get("paused") and "intruder" in str(status.get("pause_reason") or ""):
                self._intruder_effects += 1
            if status.get("blocked") == "mode_changed":
                self._intruder_effects += 1

    async def _ask(self, verb: str, payload: dict[str, Any], timeout: float = 15.0) -> Any:
        for _ in range(5):
            try:
                return await self._bus.request("executor", verb, payload, timeout=timeout)
            except Exception as e:
                self.say(f"[chaos] executor {verb}: {type(e).__name__}: {e}")
                await asyncio.sleep(2)
        return None

    async def drain(self, timeout: float) -> dict[str, Any]:
        """Until nothing rests on the exchange, the ledger has no open order, the outbox is published and every
        JetStream consumer has nothing pending; what was left when the time ran out."""
        deadline = time.monotonic() + timeout
        left: dict[str, Any] = {}
        while time.monotonic() < deadline:
            left = {}
            rec = await self.records()
            resting = sum(1 for o in rec["orders"] if o["status"] == "resting")
            if resting:
                left["exchange_resting"] = resting
            counts = await asyncio.to_thread(self._open_counts)
            left.update({k: v for k, v in counts.items() if v})
            consumers = await self._consumers_pending()
            if consumers:
                left["consumers"] = consumers
            if not left:
                return {}
            await asyncio.sleep(2)
        return left

    async def _consumers_pending(self) -> dict[str, int]:
        out: dict[str, int] = {}
        js = self._bus.js
        for spec in subjects.STREAMS:
            name = self._bus.stream(spec.name)
            with contextlib.suppress(Exception):
                for c in await js.consumers_info(name):
                    n = (c.num_pending or 0) + (c.num_ack_pending or 0)
                    if n and c.config.durable_name:
                        out[f"{name}/{c.config.durable_name}"] = n
        return out

    def _db(self) -> psycopg.Connection:
        return psycopg.connect(self.stack.libpq_url, connect_timeout=10)

    def _open_counts(self) -> dict[str, int]:
        with self._db() as db:
            open_orders = db.execute("SELECT count(*) FROM orders WHERE mode = 'sim' AND status IN "
                                     "('intent', 'pending', 'resting')").fetchone()[0]  # type: ignore[index]
            outbox = db.execute("SELECT count(*) FROM order_events WHERE mode = 'sim' AND published_at IS NULL "
                                "AND message IS NOT NULL").fetchone()[0]  # type: ignore[index]
        return {"ledger_open_orders": int(open_orders), "outbox_unpublished": int(outbox)}

    def ledger(self) -> dict[str, Any]:
        """The ledger's orders, fill ids, positions; the notifier's alerts and the intruder's audit rows."""
        with self._db() as db:
            cols = ("client_order_id", "order_id", "signal_id", "leg", "attempt", "status", "ticker", "reason")
            orders = [dict(zip(cols, r, strict=True)) for r in db.execute(
                f"SELECT {', '.join(cols)} FROM orders WHERE mode = 'sim'").fetchall()]
            fill_ids = [inv.fill_key(t or f.split(":", 1)[0], o) for f, t, o in db.execute(
                "SELECT fill_id, trade_id, order_id FROM fills WHERE mode = 'sim'").fetchall()]
            positions = {t: int(p) for t, p in db.execute(
                "SELECT ticker, sum(position) FROM positions WHERE mode = 'sim' GROUP BY ticker").fetchall()}
            alert_ids = [r[0] for r in db.execute("SELECT alert_id FROM alert_events WHERE mode = 'sim'").fetchall()]
            undelivered = db.execute(
                "SELECT count(*) FROM alert_events WHERE mode = 'sim' AND NOT suppressed AND delivered_at IS NULL "
                "AND alert_id = ANY(%s)", (list(self.alerts_acked),)).fetchone()[0]  # type: ignore[index]
            audited = db.execute("SELECT count(*), count(*) FILTER (WHERE authorized) FROM command_audit "
                                 "WHERE actor = %s", (str(INTRUDER),)).fetchone()
        return {"orders": orders, "fill_ids": fill_ids, "positions": positions, "alert_ids": alert_ids,
                "undelivered_alerts": int(undelivered), "intruder_audited": int(audited[0]),  # type: ignore[index]
                "intruder_authorized": int(audited[1])}  # type: ignore[index]

    # -- secrets ------------------------------------------------------------------------------------------------

    def needles(self) -> dict[str, list[str]]:
        """The secrets of this run: the desk's private key body, the bot token's secret, the DB password."""
        st = self.stack
        key = Path(st.env["KALSHI_SIM_PRIVATE_KEY_PATH"]).read_text()
        return {"private_key": inv.pem_needles(key), "telegram_token": [st.telegram_token.split(":", 1)[1]],
                "db_password": [st.db_password]}

    def scan_logs(self) -> dict[str, Any]:
        """Every line every process wrote (and the servers' logs), scanned for secrets."""
        needles = self.needles()
        found: Counter[str] = Counter()
        where: Counter[str] = Counter()
        lines = 0
        tracebacks: Counter[str] = Counter()
        warnings: Counter[str] = Counter()  # what the desk noticed of the faults, by service and event
        files = [*sorted(self.stack.log_dir.glob("*.log")), self.stack.nats.log_path, self.stack.pg.log_path]
        for path in files:
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                lines += 1
                hits = inv.scan_text(line, needles)
                for k, n in hits.items():
                    found[k] += n
                    where[path.stem] += n
                if "Traceback (most recent call last)" in line:
                    tracebacks[path.stem] += 1
                if line.startswith("{") and ('"warning"' in line or '"error"' in line):
                    with contextlib.suppress(ValueError):
                        d = json.loads(line)
                        if d.get("level") in ("warning", "error"):
                            warnings[f"{path.stem.split('-')[0]}:{d.get('event')}"] += 1
        return {"log_warnings_top": dict(warnings.most_common(25)),
                "secret_leaks_logs": sum(found.values()), "secret_leaks_logs_by_kind": dict(found),
                "secret_leaks_logs_by_file": dict(where), "log_lines_scanned": lines,
                "log_tracebacks": dict(tracebacks)}

    def scan_db(self) -> tuple[int, dict[str, Any]]:
        """Every text, varchar and JSON value of every table, scanned for the same secrets."""
        needles = self.needles()
        found: Counter[str] = Counter()
        values = 0
        with self._db() as db:
            cols = db.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND data_type IN ('text', 'character varying', 'json', 'jsonb', 'ARRAY')").fetchall()
            for table, col in cols:
                for (v,) in db.execute(f'SELECT "{col}"::text FROM "{table}" WHERE "{col}" IS NOT NULL'):
                    values += 1
                    for k, n in inv.scan_text(v, needles).items():
                        found[f"{table}.{col}:{k}"] += n
        return sum(found.values()), {"values_scanned": values, "found": dict(found)}


def _short(x: Any) -> Any:
    text = json.dumps(x, default=str)
    return x if len(text) < 600 else text[:600] + "…"

