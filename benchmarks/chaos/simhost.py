"""`python -m benchmarks.chaos.simhost`: the simulator as `kdesk up` runs it, plus a control port for the campaign.

The world, the exchange, the fake venues, weather, Telegram and LLM are started exactly as `services.sim` starts
them (same environment, same port block), with `Faults.middleware` installed in front of the exchange. A small
HTTP server on `--control-port` (127.0.0.1 only) lets the chaos harness, another process, switch the sim's faults
and read the exchange's own records of the desk's account:

- `POST /fault` `{"kind": ..., ...}`: one fault (see `FAULTS`); answers what it did. `fill_burst` trades every
  resting order of the desk at once (the campaign kills an executor into it).
- `POST /clear`: every exchange and Telegram fault off.
- `GET /records?user=desk`: the engine's orders, fills, positions and settlements of that user, and market states.
- `POST /telegram/message` `{"user_id", "text"}`: a Telegram user writes to the bot.
- `GET /telegram/state`: what the fake Bot API saw (messages sent per chat, calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from libs.common.logs import configure_logging, get_logger
from services.sim import __main__ as sim_main
from services.sim.server import SimExchange

log = get_logger("benchmarks.chaos.simhost")


def _plain(obj: Any) -> Any:
    """A dataclass of the engine as JSON-able data (datetimes as ISO strings)."""
    d = asdict(obj)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in d.items()}


class Control:
    """The campaign's handle on the running simulator."""

    def __init__(self, exchange: SimExchange, telegram: Any, venues: list[Any] | None = None,
                 weather: Any = None) -> None:
        self.exchange = exchange
        self.telegram = telegram
        self.venues = venues or []
        self.weather = weather
        self._timers: list[asyncio.Task[None]] = []
        self._until: dict[str, float] = {}  # switch -> monotonic end of its latest window (windows overlap)

    def _later(self, seconds: float, fn: Callable[[], None], switch: str | None = None) -> None:
        """`fn` after `seconds`; for a `switch`, only once no later window of that switch is still open."""
        if switch is not None:
            self._until[switch] = max(self._until.get(switch, 0.0), time.monotonic() + seconds)

        async def run() -> None:
            await asyncio.sleep(seconds)
            if switch is None or time.monotonic() >= self._until.get(switch, 0.0) - 0.01:
                fn()

        self._timers.append(asyncio.create_task(run()))
        self._timers = [t for t in self._timers if not t.done()]

    def fault(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply one fault; see FAULTS for the kinds and their arguments."""
        f = self.exchange.faults
        kind = str(body.get("kind"))
        secs = float(body.get("seconds", 5.0))
        if kind == "ws_cut":
            return {"cut": f.cut_connections()}
        if kind == "seq_gap":
            for _ in range(int(body.get("times", 1))):
                f.drop_next_seq(body.get("ticker"))
            return {"ok": True}
        if kind == "ws_error_25":
            return {"killed": f.send_error_25(body.get("ticker"))}
        if kind == "latency":
            f.latency_s = max(f.latency_s, float(body.get("latency_s", 0.5)))
            self._later(secs, lambda: setattr(f, "latency_s", 0.0), "latency")
            return {"ok": True}
        if kind == "late_response":
            f.response_delay_s = max(f.response_delay_s, float(body.get("delay_s", 1.0)))
            self._later(secs, lambda: setattr(f, "response_delay_s", 0.0), "late_response")
            return {"ok": True}
        if kind == "trading_paused":
            f.trading_paused = True
            self._later(secs, lambda: setattr(f, "trading_paused", False), "trading_paused")
            return {"ok": True}
        if kind == "lost_response":
            f.lose_next_response(str(body.get("method", "POST")), str(body.get("path", "/portfolio/events/orders")),
                                 int(body.get("status", 503)))
            return {"ok": True}
        if kind == "http_5xx":
            f.fail_next(int(body.get("times", 3)), status=int(body.get("status", 502)), method=body.get("method"),
                        path_suffix=str(body.get("path", "")))
            return {"ok": True}
        if kind == "timeout":
            f.time_out_next(float(body.get("hold_s", 11.0)), int(body.get("times", 1)), method=body.get("method"),
                            path_suffix=str(body.get("path", "")))
            return {"ok": True}
        if kind == "rate_limit_storm":
            f.storm_429(secs)
            return {"ok": True}
        if kind in ("venue_down", "venue_cut", "venue_garbage"):
            # The crypto venues the BTC model reads: silent (connections open, nothing sent), dropped, or garbage.
            for v in self.venues:
                if kind == "venue_down":
                    v.pause()
                    self._later(secs, v.resume, f"venue_down:{id(v)}")
                elif kind == "venue_cut":
                    v.cut()
                else:
                    for _ in range(int(body.get("times", 2))):
                        v.send_garbage()
            return {"venues": len(self.venues)}
        if kind in ("weather_5xx", "weather_garbage"):
            if self.weather is None:
                return {"error": "no fake weather"}
            n = int(body.get("times", 3))
            if kind == "weather_5xx":
                self.weather.fail_next(n, int(body.get("status", 503)))
            else:
                self.weather.garbage_next(n)
            return {"ok": True}
        if kind in ("telegram_down", "telegram_429"):
            if self.telegram is None:
                return {"error": "no fake Telegram"}
            if kind == "telegram_down":
                self.telegram.outage(int(body.get("status", 502)))
                self._later(secs, lambda: self.telegram.outage(None), "telegram_down")
            else:
                self.telegram.fail(int(body.get("times", 5)), status=429, retry_after=int(body.get("retry_after", 2)))
            return {"ok": True}
        if kind == "fill_burst":
            return self.fill_burst(str(body.get("user", "desk")), float(body.get("share", 1.0)))
        return {"error": f"unknown fault kind {kind!r}; one of {sorted(FAULTS)}"}

    def fill_burst(self, user: str, share: float) -> dict[str, Any]:
        """Trade `share` of every resting order of `user` at once against a taker of the campaign's own: a burst
        of fills (and their WebSocket frames) the desk must book while one of its executors is being killed."""
        eng = self.exchange.engine
        eng.open_account(BURST_TAKER, 10**13)  # pooled, refunded each time: solvent on every shard
        fills = orders = 0
        for o in eng.orders(user, status="resting"):
            count = max(1, int(o.remaining_count * share))
            try:
                got = eng.fill_resting(o.order_id, min(count, o.remaining_count), taker_user=BURST_TAKER)
            except ValueError:  # e.g. a reduce-only order with nothing left to reduce
                continue
            orders += bool(got)
            fills += sum(1 for f in got if f.user_id == user)
        return {"orders": orders, "fills": fills}

    def pending(self) -> dict[str, int]:
        """One-shot faults armed and never consumed (nothing asked while they waited), by kind."""
        out = self.exchange.faults.pending()
        if self.weather is not None:
            out["weather_5xx"] = len(getattr(self.weather, "_fail", ()))
            out["weather_garbage"] = int(getattr(self.weather, "_garbage", 0))
        if self.telegram is not None:
            out["telegram_429"] = sum(getattr(f, "times", 1) for f in getattr(self.telegram, "_faults", ()))
        return {k: v for k, v in out.items() if v}

    def clear(self) -> dict[str, int]:
        """Every fault off (pending timers too); what one-shot faults were left unconsumed."""
        left = self.pending()
        self._until.clear()
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        self.exchange.faults.clear()
        for v in self.venues:
            v.resume()
        if self.telegram is not None:
            self.telegram.outage(None)
            self.telegram._faults.clear()  # no public way to drop pending one-shot failures
        if self.weather is not None:  # nor for the weather fake's
            self.weather._fail.clear()
            self.weather._garbage = 0
        return left

    def records(self, user: str) -> dict[str, Any]:
        """The exchange's own books of `user`."""
        eng = self.exchange.engine
        try:
            orders, fills = eng.orders(user), eng.fills(user)
            positions, settlements = eng.positions(user), eng.settlements(user)
        except Exception:  # an unknown user (no key registered yet)
            orders, fills, positions, settlements = [], [], [], []
        markets = {}
        for t, m in self.exchange.catalog.markets.items():
            spec = eng.market(t)
            markets[t] = {"status": spec.status, "event_ticker": m.event_ticker, "series_ticker": m.series_ticker,
                          "strike_type": m.strike_type,
                          "floor_strike": str(m.floor_strike) if m.floor_strike is not None else None,
                          "cap_strike": str(m.cap_strike) if m.cap_strike is not None else None}
        return {"orders": [_plain(o) for o in orders], "fills": [_plain(f) for f in fills],
                "positions": [_plain(p) for p in positions], "settlements": [_plain(s) for s in settlements],
                "markets": markets, "requests": dict(self.exchange.requests)}


BURST_TAKER = "chaos-taker"
FAULTS = ("fill_burst", "ws_cut", "seq_gap", "ws_error_25", "latency", "late_response", "trading_paused",
          "lost_response", "http_5xx", "timeout", "rate_limit_storm", "venue_down", "venue_cut", "venue_garbage",
          "weather_5xx", "weather_garbage", "telegram_down", "telegram_429")


async def serve_control(ctl: Control, host: str, port: int) -> web.AppRunner:
    """The control API on host:port."""
    async def fault(request: web.Request) -> web.Response:
        try:
            return web.json_response(ctl.fault(await request.json()))
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)

    async def clear(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "unconsumed": ctl.clear()})

    async def pending(_: web.Request) -> web.Response:
        return web.json_response(ctl.pending())

    async def records(request: web.Request) -> web.Response:
        return web.json_response(ctl.records(request.query.get("user", "desk")))

    async def tg_message(request: web.Request) -> web.Response:
        b = await request.json()
        if ctl.telegram is None:
            return web.json_response({"error": "no fake Telegram"}, status=404)
        return web.json_response({"update_id": ctl.telegram.inject_message(int(b["user_id"]), str(b["text"]))})

    async def tg_state(_: web.Request) -> web.Response:
        tg = ctl.telegram
        if tg is None:
            return web.json_response({"error": "no fake Telegram"}, status=404)
        sent = [{"chat_id": r["chat"]["id"], "text": r.get("text") or r.get("caption") or ""} for r in tg.sent]
        return web.json_response({"sent": sent, "calls": dict(tg.calls), "pending_updates": tg.pending_updates})

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "ts": time.time()})

    app = web.Application()
    app.router.add_post("/fault", fault)
    app.router.add_post("/clear", clear)
    app.router.add_get("/pending", pending)
    app.router.add_get("/records", records)
    app.router.add_post("/telegram/message", tg_message)
    app.router.add_get("/telegram/state", tg_state)
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run(args: argparse.Namespace, control_port: int, stop: asyncio.Event) -> None:
    """`services.sim.__main__.run` with the fault middleware and the control port."""
    from services.sim.scenarios import default_world

    world = default_world(args.seed, datetime.now(UTC))
    traders = None if args.no_traders else sim_main._traders(world)
    exchange = SimExchange(world, background=True, tick_s=args.tick_s, traders=traders,
                           trader_steps=args.trader_steps)
    exchange.app.middlewares.insert(0, exchange.faults.middleware)  # outermost: in front of the exchange
    sim_main.register_keys(exchange, args.keys_dir, args.balance_ticks)
    await exchange.start(args.host, args.port)
    venues = await sim_main.start_venues(world, args.host, exchange.port)
    weather = await sim_main.start_weather(world, args.host, exchange.port)
    telegram = await sim_main.start_telegram(args.host, exchange.port, args.telegram_token, args.telegram_chats)
    ctl = Control(exchange, telegram, venues, weather)
    runner = await serve_control(ctl, "127.0.0.1", control_port)
    log.info("sim_ready", rest_url=exchange.rest_url, control_port=control_port, markets=len(exchange.catalog.markets))
    try:
        await sim_main.serve_until(stop, exchange, args.keys_dir, args.balance_ticks, venues, weather, telegram)
    finally:
        await runner.cleanup()


async def _main(args: argparse.Namespace, control_port: int) -> None:
    await sim_main.until_signalled(lambda stop: run(args, control_port, stop))


def main(argv: list[str] | None = None) -> None:
    """Process entry point: `--control-port N` plus the simulator's own options (from the environment)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    control_port = int(os.environ.get("KDESK_CHAOS_CONTROL_PORT", "0"))
    if "--control-port" in argv:
        i = argv.index("--control-port")
        control_port = int(argv[i + 1])
        del argv[i:i + 2]
    if not control_port:
        raise SystemExit("simhost: --control-port or KDESK_CHAOS_CONTROL_PORT is required")
    args = sim_main.parse_args(argv)
    configure_logging("sim", os.environ.get("KDESK_LOG_LEVEL", "INFO"), os.environ.get("KDESK_LOG_FORMAT", "auto"))
    asyncio.run(_main(args, control_port))


if __name__ == "__main__":
    main()
