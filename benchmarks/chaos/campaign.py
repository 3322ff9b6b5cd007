"""The fault campaign (issue 18): the desk as processes, seeded faults for a while, then quiesce and check.

1. Start NATS, PostgreSQL, the simulator (background traders keep the books moving; the crowd's prices lag the
   truth, so the desk finds edges and trades) and every service, and wait until each reports healthy.
2. For `duration_s`, inject faults from a seeded schedule (`FAULT_KINDS`): every kind on a timeline of its own
   (its own RNG seeded from the run's seed and the kind), all running at once so kinds overlap: exchange, venue,
   weather and Telegram faults one every `KDESK_CHAOS_GAP_S` (2.6 s) on average, each short (a 429 storm or a
   pause of 0.5-2 s) so the desk trades between them; process kills (`KILLS`, among them an executor killed
   while an order's answer is held back and one killed into a burst of fills) one every `KDESK_CHAOS_HEAVY_GAP_S`
   (14 s) per kind; NATS and PostgreSQL restarts in storms (`KDESK_CHAOS_STORM_S` of every `KDESK_CHAOS_WAVE_S`,
   one every `KDESK_CHAOS_SERVER_GAP_S` of each), with calm between in which the desk trades. A killed process
   (SIGKILL) is started again 0.2-2 s later
   without waiting for anything (a kill may land during its start-up; it counts as that kind); so is any
   process that dies on its own (counted as `unplanned_exits`). Desk services are forked from a zygote that
   imported them once (benchmarks/chaos/zygote.py), so a restart costs milliseconds of CPU, not seconds.
   One-shot faults (`ONE_SHOT`: the next request or message) are armed one at a time and counted when a
   request consumed them. Alongside, alerts are published (each one PubAck'ed by JetStream is expected in the
   notifier's table and delivered to Telegram) and a Telegram user who is nobody's operator sends commands.
3. Quiesce: faults off, every process back and healthy, the desk paused (resting orders cancelled), the
   executor's outbox and every JetStream consumer drained, a reconciliation.
4. Check the invariants against the exchange's own records and the ledger (invariants.py), scan every log line
   and every stored text value for secrets, run the bad-input fuzz campaign (benchmarks/fuzz.py), report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
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
KILLS = (*SERVICE_KILLS, "kill_executor_in_flight", "kill_executor_in_fill_burst")
SERVERS = ("nats_restart", "postgres_restart")
FAULT_KINDS = (*KILLS, *SERVERS, *EXCHANGE_FAULTS, *SOURCE_FAULTS, "telegram_down", "telegram_429")
# The six kinds of fault, each of which the default run must inject at least 100 times. A three-node
# cluster's node kills (benchmarks/chaos/cluster.py, beside the campaign) count under nats as well.
FAULT_CLASSES = {"process_kills": KILLS, "nats": ("nats_restart", "cluster_node_kill"),
                 "postgres": ("postgres_restart",), "exchange": EXCHANGE_FAULTS, "outside_sources": SOURCE_FAULTS,
                 "telegram": ("telegram_down", "telegram_429")}
# One-shot faults: armed on the next request or message of a kind, they hit only when the desk sends one. Each is
# armed once (times=1) and the next of its kind only after it was consumed, so nothing piles up; the count is of
# consumed ones (armed minus the one possibly left at the end, `faults_unconsumed_at_end`).
# Faults that take a process or a server down: at one every ~2.6 s per kind the desk never finishes starting
# (measured: 0 orders reached the exchange in a 60 s window with every kind at 2.6 s, and none either with only
# NATS and PostgreSQL restarting every 2.6 s: a restart costs each 0.6-0.9 s, and an executor's start needs both).
# Process kills have a mean gap per kind of their own (KDESK_CHAOS_HEAVY_GAP_S, 14 s: eight kinds, ~170 kills in
# the default run). NATS and PostgreSQL restarts, each one of the six kinds that need 100 in the default
# run, come in storms: the first KDESK_CHAOS_STORM_S (10 s) of every KDESK_CHAOS_WAVE_S (20 s), one every
# KDESK_CHAOS_SERVER_GAP_S (1.4 s) of each on average (~105 of each in 300 s), and none in the calm between, in
# which the desk starts again and trades (kills and every other kind go on through both).
ONE_SHOT = ("seq_gap", "lost_response", "http_5xx", "timeout", "weather_5xx", "weather_garbage", "telegram_429")
DEFAULT_HEAVY_GAP_S = 14.0
DEFAULT_SERVER_GAP_S = 1.4
DEFAULT_WAVE_S, DEFAULT_STORM_S = 20.0, 10.0
INTRUDER_COMMANDS = ("/pause intruder", "/resume", "/flatten", "/mode live", "CONFIRM LIVE", "/family btc off",
                     "/llmbudget 1000", "/status")


def _now() -> datetime:
    return datetime.now(UTC)


class Campaign:
    """One run: the stack, the schedule, the counters."""

    def __init__(self, root: Path, *, duration_s: float, seed: int, mean_gap_s: float | None = None,
                 heavy_gap_s: float | None = None, server_gap_s: float | None = None, security: bool = True,
                 say: Callable[[str], None] = lambda s: print(s, flush=True)) -> None:
        self.root = root
        self.duration_s = duration_s
        # Mean seconds between two faults of one kind: 300 s / 2.6 s = ~115 of every kind in the default run.
        self.mean_gap_s = mean_gap_s if mean_gap_s is not None else float(os.environ.get("KDESK_CHAOS_GAP_S", "2.6"))
        self.heavy_gap_s = heavy_gap_s if heavy_gap_s is not None else float(
            os.environ.get("KDESK_CHAOS_HEAVY_GAP_S", str(DEFAULT_HEAVY_GAP_S)))
        self.server_gap_s = server_gap_s if server_gap_s is not None else float(
            os.environ.get("KDESK_CHAOS_SERVER_GAP_S", str(DEFAULT_SERVER_GAP_S)))
        self.wave_s = float(os.environ.get("KDESK_CHAOS_WAVE_S", str(DEFAULT_WAVE_S)))
        self.storm_s = min(self.wave_s, float(os.environ.get("KDESK_CHAOS_STORM_S", str(DEFAULT_STORM_S))))
        self.burst_fills = 0  # fills the exchange made in the bursts an executor was killed into
        self.seed = seed
        self.cluster = os.environ.get("KDESK_CHAOS_CLUSTER", "1") != "0"  # the cluster drill beside the window
        self.cluster_report: dict[str, Any] = {}
        self.security = security  # the live-path refusals and `kdesk up`'s file modes (security.py), ~60 s
        self.rng = random.Random(seed)
        self.say = say
        self.stack = Stack(root, seed=seed)
        self.faults: Counter[str] = Counter()
        self.fault_errors: Counter[str] = Counter()
        self.fault_seconds: Counter[str] = Counter()  # time spent injecting (kill to restart asked, restarts)
        self.unplanned_exits: Counter[str] = Counter()
        self.alerts_acked: set[str] = set()
        self.alerts_unacked = 0
        self.alert_times: dict[str, float] = {}  # alert id -> seconds into the campaign when JetStream acked it
        self.window: tuple[datetime, datetime] | None = None  # wall clock of the fault window
        self.intruder_sent = 0
        self.timeline: list[tuple[float, str]] = []
        self._restarts: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: httpx.AsyncClient | None = None
        self._t0 = 0.0
        self._bus: Any = None
        self.health_text: dict[str, str] = {}

    # -- helpers ----------------------------------------------------------------------------------------------

    async def _control(self, body: dict[str, Any], path: str = "/fault") -> dict[str, Any]:
        r = await self._client().post(self.stack.control_url + path, json=body)
        out: dict[str, Any] = r.json()
        if "error" in out:
            raise RuntimeError(f"sim control {body}: {out['error']}")
        return out

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10)
        return self._http

    async def records(self) -> dict[str, Any]:
        """The exchange's records of the desk's account."""
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.get(self.stack.control_url + "/records", params={"user": "desk"})
            return r.json()  # type: ignore[no-any-return]

    def _restart_later(self, name: str, lo: float = 0.2, hi: float = 2.0, rng: random.Random | None = None) -> None:
        """Start `name` again after a random delay (not waiting for anything: a kill may come during start-up)."""
        proc = self.stack.procs[name]
        delay = (rng or self.rng).uniform(lo, hi)
        proc.restart_at = time.monotonic() + delay

        async def go() -> None:
            await asyncio.sleep(delay)
            async with self._lock(name):
                if not proc.running:
                    await asyncio.to_thread(proc.start)

        task = asyncio.create_task(go())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _kill(self, name: str, rng: random.Random) -> None:
        """SIGKILL `name` (once it runs again, if a restart is pending), then start it again 0.2-2 s later."""
        proc = self.stack.procs[name]
        deadline = time.monotonic() + 20
        while True:
            async with self._lock(name):
                if proc.running:
                    try:
                        await asyncio.to_thread(proc.kill)
                    finally:
                        self._restart_later(name, rng=rng)  # as a supervisor would, whatever the kill said
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not running for 20 s: nothing to kill")
            await asyncio.sleep(0.05)

    # -- the faults -------------------------------------------------------------------------------------------

    async def inject(self, kind: str, r: random.Random | None = None) -> None:
        """One fault of `kind`, short (the desk trades between them), its randomness from `r`."""
        r = r or self.rng
        if kind in SERVICE_KILLS:
            name = kind.removeprefix("kill_").replace("_", "-")
            await self._kill(name, r)
        elif kind == "kill_executor_in_flight":
            # Answers to order writes arrive late; an executor dies while one is outstanding.
            await self._control({"kind": "late_response", "delay_s": r.uniform(1.0, 2.5), "seconds": 2.5})
            await asyncio.sleep(r.uniform(0.3, 1.5))
            await self._kill(r.choice(("executor-1", "executor-2")), r)
        elif kind == "kill_executor_in_fill_burst":
            # Every resting order of the desk trades at once; an executor dies while the fills stream in.
            got = await self._control({"kind": "fill_burst", "share": r.choice((0.5, 1.0))})
            self.burst_fills += int(got.get("fills", 0))
            await asyncio.sleep(r.uniform(0.0, 0.3))
            await self._kill(r.choice(("executor-1", "executor-2")), r)
        elif kind == "nats_restart":
            await asyncio.to_thread(self.stack.restart_nats, r.uniform(0.1, 0.5))
        elif kind == "postgres_restart":
            await asyncio.to_thread(self.stack.restart_postgres, r.uniform(0.05, 0.3))
        elif kind == "ws_cut":
            await self._control({"kind": "ws_cut"})
        elif kind == "seq_gap":
            await self._control({"kind": "seq_gap", "times": 1})
        elif kind == "ws_error_25":
            await self._control({"kind": "ws_error_25"})
        elif kind == "latency":
            await self._control({"kind": "latency", "latency_s": r.uniform(0.1, 0.8), "seconds": r.uniform(0.5, 2)})
        elif kind == "late_response":
            await self._control({"kind": "late_response", "delay_s": r.uniform(0.5, 3), "seconds": r.uniform(0.5, 2)})
        elif kind == "trading_paused":
            await self._control({"kind": "trading_paused", "seconds": r.uniform(0.5, 2)})
        elif kind == "lost_response":
            # Any write (create, amend, decrease, cancel): the exchange does it, the desk hears a 5xx.
            await self._control({"kind": "lost_response", "method": r.choice(("POST", "POST", "DELETE")),
                                 "path": "",
                                 "status": r.choice((502, 503, 504))})
        elif kind == "http_5xx":
            await self._control({"kind": "http_5xx", "times": 1, "status": r.choice((500, 502, 503)),
                                 "path": r.choice(("", "", "", "/portfolio/orders"))})
        elif kind == "timeout":
            # Past the client's 10 s timeout: the work is done, the desk never hears.
            await self._control({"kind": "timeout", "hold_s": 11.0, "times": 1,
                                 "method": r.choice(("POST", None, None)),
                                 "path": r.choice(("/portfolio/events/orders", "", ""))})
        elif kind == "rate_limit_storm":
            await self._control({"kind": "rate_limit_storm", "seconds": r.uniform(0.5, 2)})
        elif kind == "venue_down":
            await self._control({"kind": "venue_down", "seconds": r.uniform(0.5, 2)})
        elif kind in ("venue_cut", "venue_garbage"):
            await self._control({"kind": kind, "times": r.randint(1, 2)})
        elif kind in ("weather_5xx", "weather_garbage"):
            await self._control({"kind": kind, "times": 1, "status": r.choice((500, 502, 503))})
        elif kind in ("telegram_down", "telegram_429"):
            if kind == "telegram_down":
                await self._control({"kind": "telegram_down", "status": r.choice((500, 502, 503)),
                                     "seconds": r.uniform(0.5, 2)})
            else:
                await self._control({"kind": "telegram_429", "times": 1, "retry_after": 1})
            await self.alert_burst(r.randint(1, 3))
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
                self.alert_times[a.id] = round(time.monotonic() - self._t0, 2)
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
            if self.security:
                self.say("[chaos] security: the live path without KDESK_ALLOW_LIVE=1 and arming")
                from benchmarks.chaos import security

                live = await security.live_refusals(st.nats.url, st.db_url, self.root / "security")
                report.update({"live_refusal_failures": live["live_refusal_failures"],
                               "live_refusal_checks": live["live_refusal_checks"],
                               "live_order_requests": live["live_order_requests"],
                               "live_refusal_detail": live["details"]})
        finally:
            stop_watch.set()
            with contextlib.suppress(Exception):
                await watcher
            for t in list(self._restarts):
                t.cancel()
            with contextlib.suppress(Exception):
                await self._bus.close()
            if self._http is not None:
                await self._http.aclose()
            await asyncio.to_thread(st.stop_all)
        if self.security:
            self.say("[chaos] security: the modes of what `kdesk up` writes")
            from benchmarks.chaos import security

            up = await security.kdesk_up_loose_files(self.root / "security-up")
            report.update({"loose_files": up["loose_files"], "loose_file_paths": up["paths"][:20]})
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
        """The seeded schedule: every kind on its own timeline (its own RNG, one fault every `MEAN_GAP_S` on
        average, jittered), all at once, so kinds overlap; alerts and the intruder on timelines of their own."""
        self._t0 = time.monotonic()
        end = self._t0 + duration_s
        w0 = _now()
        with contextlib.suppress(Exception):
            self._requests0 = sum((await self.records())["requests"].values())
        tasks = [asyncio.create_task(self._timeline(kind, end)) for kind in FAULT_KINDS]
        if self.cluster:
            tasks.append(asyncio.create_task(self._cluster(duration_s)))
        tasks.append(asyncio.create_task(self._every("alert", end, 2.0, lambda: self.alert_burst(1))))
        tasks.append(asyncio.create_task(self._every("intruder", end, 6.0, self.intruder)))
        await asyncio.gather(*tasks)  # each ends after its last fault is done (NATS and PostgreSQL are back up)
        self.window = (w0, _now())
        with contextlib.suppress(Exception):
            self._requests1 = sum((await self.records())["requests"].values())

    async def _cluster(self, duration_s: float) -> None:
        """The three-node cluster drill beside the fault window (benchmarks/chaos/cluster.py): its node kills count
        as faults (`cluster_node_kill`), its acknowledged messages never consumed as lost messages."""
        from benchmarks.chaos.cluster import cluster_drill

        try:
            self.cluster_report = await cluster_drill(self.root / "cluster", duration_s, self.seed,
                                                      say=lambda _: None)
        except Exception as e:
            self.fault_errors["cluster_node_kill"] += 1
            self.say(f"[chaos] cluster drill failed: {type(e).__name__}: {e}")
            return
        self.faults["cluster_node_kill"] = self.cluster_report["cluster_node_kills"]

    async def _timeline(self, kind: str, end: float) -> None:
        rng = random.Random(f"{self.seed}/{kind}")
        mean = self.heavy_gap_s if kind in KILLS else self.server_gap_s if kind in SERVERS else self.mean_gap_s
        at = self._t0 + rng.uniform(0.0, mean)  # staggered first faults
        while at < end:
            if kind in SERVERS:
                at = self._in_storm(at, rng, mean)
                if at >= end:
                    break
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if kind in ONE_SHOT and not await self._consumed(kind, end):
                break
            t = time.monotonic() - self._t0
            try:
                await self.inject(kind, rng)
                self._pending_at = 0.0  # what the simulator has armed changed
                self.faults[kind] += 1
                self.fault_seconds[kind] += time.monotonic() - self._t0 - t
                self.timeline.append((round(t, 1), kind))
            except Exception as e:
                self.fault_errors[kind] += 1
                self.say(f"[chaos] fault {kind} failed: {type(e).__name__}: {e}")
            # The next one on the schedule, not after this one's recovery; never two at once of one kind.
            at = max(at + rng.uniform(0.5, 1.5) * mean, time.monotonic() + 0.05)

    def _in_storm(self, at: float, rng: random.Random, mean: float) -> float:
        """`at` if it falls in a storm window (the first storm_s of each wave_s), else a moment early in the next."""
        into = (at - self._t0) % self.wave_s
        if into < self.storm_s:
            return at
        return at - into + self.wave_s + rng.uniform(0.0, min(mean, self.storm_s))

    async def _consumed(self, kind: str, end: float) -> bool:
        """Wait until no fault of `kind` is armed (the previous one hit); False if the run ended first."""
        while time.monotonic() < end:
            with contextlib.suppress(Exception):
                if not (await self._pending()).get(kind):
                    return True
            await asyncio.sleep(0.2)
        return False

    async def _pending(self) -> dict[str, int]:
        """The simulator's armed one-shot faults, by kind (one request serves every timeline for 0.1 s)."""
        now = time.monotonic()
        if now - self._pending_at > 0.1:
            self._pending_cache = (await self._client().get(self.stack.control_url + "/pending")).json()
            self._pending_at = time.monotonic()
        return self._pending_cache

    _pending_at = 0.0
    _pending_cache: dict[str, int] = {}  # noqa: RUF012 - replaced, never mutated

    async def _every(self, what: str, end: float, mean: float, fn: Callable[[], Any]) -> None:
        rng = random.Random(f"{self.seed}/{what}")
        while time.monotonic() < end:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * mean)
            with contextlib.suppress(Exception):
                await fn()

    async def quiesce_and_check(self) -> dict[str, Any]:
        """Faults off, everyone back, paused, drained, reconciled; then every invariant."""
        st = self.stack
        self.say("[chaos] quiesce: faults off, waiting for restarts")
        unconsumed: dict[str, int] = {}
        with contextlib.suppress(Exception):
            unconsumed = (await self._control({}, "/clear")).get("unconsumed", {})
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
        armed = dict(self.faults)
        for kind, n in unconsumed.items():  # armed, never hit: not a fault the desk saw
            if kind in self.faults:
                self.faults[kind] = max(0, self.faults[kind] - n)
        report: dict[str, Any] = {"seed": self.seed, "duration_s": self.duration_s,
                                  "faults_injected": dict(sorted(self.faults.items())),
                                  "faults_injected_total": sum(self.faults.values()),
                                  "faults_armed_one_shot": {k: armed.get(k, 0) for k in ONE_SHOT},
                                  "fault_errors": dict(self.fault_errors),
                                  "faults_by_class": {c: sum(self.faults.get(k, 0) for k in kinds)
                                                      for c, kinds in FAULT_CLASSES.items()},
                                  "fill_burst_fills": self.burst_fills,
                                  "mean_gap_s": self.mean_gap_s, "heavy_gap_s": self.heavy_gap_s,
                                  "server_gap_s": self.server_gap_s, "wave_s": self.wave_s, "storm_s": self.storm_s,
                                  "fault_seconds_mean": {k: round(self.fault_seconds[k] / n, 2)
                                                         for k, n in sorted(armed.items()) if n},
                                  # one-shot faults (next N requests/messages) still armed when faults were
                                  # cleared: injected, but nothing came along to hit them
                                  "faults_unconsumed_at_end": unconsumed}
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
        lost = sorted(self.alerts_acked - stored, key=lambda i: self.alert_times.get(i, 0.0))
        report["lost_messages"] = len(lost) + int(self.cluster_report.get("cluster_lost_messages", 0))
        report["lost_messages_single_node"] = len(lost)
        report["cluster"] = self.cluster_report
        nats_at = [t for t, k in self.timeline if k == "nats_restart"]
        report["lost_message_detail"] = [
            {"alert_id": i, "acked_at_s": self.alert_times.get(i),
             "since_nats_restart_s": round(min((self.alert_times.get(i, 0.0) - t for t in nats_at
                                                if t <= self.alert_times.get(i, 0.0)), default=-1.0), 2)}
            for i in lost[:20]]
        report["undelivered_alerts"] = ledger["undelivered_alerts"]
        report["alerts_published"] = len(self.alerts_acked)
        report["alerts_unacked_by_jetstream"] = self.alerts_unacked
        # Audit rows of the intruder marked authorized, plus effects seen on the desk (intruder_final).
        report["unauthorized_commands"] = ledger["intruder_authorized"] + self._intruder_effects
        report["intruder_commands_sent"] = self.intruder_sent
        report["intruder_commands_audited"] = ledger["intruder_audited"]
        report["exchange_orders"] = len(records["orders"])
        report["exchange_fills"] = len(records["fills"])
        report["exchange_requests"] = sum(records.get("requests", {}).values())
        report["exchange_requests_during_faults"] = self._requests1 - self._requests0
        if self.window is not None:
            a, b = self.window

            def inside(row: dict[str, Any]) -> bool:
                with contextlib.suppress(TypeError, ValueError):
                    return a <= datetime.fromisoformat(str(row.get("created_time"))) <= b
                return False

            report["exchange_orders_during_faults"] = sum(1 for o in records["orders"] if inside(o))
            report["exchange_fills_during_faults"] = sum(1 for f in records["fills"] if inside(f))
        report["ledger_orders_sent"] = sum(1 for o in ledger["orders"] if o["status"] != "blocked")
        report["ledger_orders_blocked"] = sum(1 for o in ledger["orders"] if o["status"] == "blocked")
        report["quiesce"] = {"paused": bool(pause), "drained": drained, "drained_after_reconcile": drained_after,
                             "reconcile": _short(recon)}
        report["_db_leaks"], report["secret_leaks_db"] = await asyncio.to_thread(self.scan_db)
        return report

    _intruder_effects = 0
    _requests0 = _requests1 = 0  # the exchange's count of REST requests (every user) when faults began, ended

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
        dead: Counter[str] = Counter()  # messages a consumer gave up on (dead-lettered), by consumer and reason
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
                        if d.get("event") == "message_dead_lettered":
                            dead[f"{d.get('stream')}/{d.get('consumer')}:{d.get('reason')}"] += 1
        return {"log_warnings_top": dict(warnings.most_common(25)), "dead_lettered": dict(dead),
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

