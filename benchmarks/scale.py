"""Scale: the desk (feeds, signals, executor, each its own process) against a sim world of thousands of markets.

The world is services/sim/scale.py (`python -m services.sim.scale`): 24 weather cities × 2 climate days × 6
brackets and hourly/daily BTC ladders of ~145 strikes (+ range ladders), churned by the background traders
at `ACTIONS_PER_MARKET_S` actions per market per second. Each service runs as `python -m benchmarks.scale
--service <name>` (the synthesized stations installed, then `services.<name>` as `kdesk up` runs it, with
its environment), over a private nats-server and PostgreSQL of its own per size.

- `markets_tracked`: distinct markets seen on `md.book` during the 2,000-market window (the books the signals
  service holds and evaluates).
- `scale_signal_lag_p50_ms` / `_p99_ms` (2,000 markets): a signal's `ts_init` minus the `ts_event` of the
  book it was computed from (in the signal id): feeds publishing the book → signals having decided.
  `scale_signal_lag_from_exchange_p99_ms` measures from the exchange's own timestamp of the book's last
  delta (`ts_exchange`, whole milliseconds) instead, so it includes the sim's WS and the feeds.
- `scale_book_on_bus_lag_p50_ms` / `_p99_ms`: a book's `ts_event` (stamped by feeds as it publishes) to this
  bench seeing it on `md.book`: the feeds' and the bus's part of the signal lag (the rest is the signals
  service's queue and work).
- `scale_cpu_share_<proc>`: CPU seconds per wall second over the window (1.0 = one core of this machine's
  2), `scale_rss_mb_<proc>`: resident memory at the end; for sim, feeds, signals, executor, nats, postgres
  (postgres: all its processes).
- `scale_lag_p99_ms_at_<n>` for 200, 2,000 and 5,000 markets (the 5,000 window is shorter), with
  `scale_books_per_s_at_<n>` and `scale_signals_per_s_at_<n>` to show the load each saw.

`SCALE_SIGNALS_NO_DB=1`: run signals without PostgreSQL (no signal rows), to see what the store costs.
`SCALE_PROFILE_DIR=<dir>`: run each service under cProfile and write `<dir>/<size>-<service>.prof`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db.migrate import upgrade_to_head
from libs.common.embedded import EmbeddedNats, EmbeddedPostgres
from libs.common.simnet import reserve_block

SIZES = ((200, 20.0), (2000, 40.0), (5000, 20.0))  # (target markets, measured window s)
ACTIONS_PER_MARKET_S = 0.05  # background trader actions per market per second (100/s at 2,000 markets)
SERVICES = ("feeds", "signals", "executor")
ROOT = Path(__file__).resolve().parent.parent


def _pct(xs: list[float], q: int) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return round(xs[0], 3)
    return round(statistics.quantiles(xs, n=100, method="inclusive")[q - 1], 3)


def _us(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000)


def _keys(var: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = var / "sim" / "desk.key.pem"
    public = var / "sim" / "keys" / "desk.pub.pem"
    public.parent.mkdir(parents=True, exist_ok=True)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public.parent


@dataclass
class Sampler:
    """CPU and RSS of named process trees, between `start()` and `stop()`."""

    procs: dict[str, list[psutil.Process]] = field(default_factory=dict)
    cpu0: dict[str, float] = field(default_factory=dict)
    t0: float = 0.0

    def _cpu(self, name: str) -> float:
        total = 0.0
        for p in self._tree(name):
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                total += c.user + c.system
        return total

    def _tree(self, name: str) -> list[psutil.Process]:
        out = []
        for p in self.procs[name]:
            out.append(p)
            with contextlib.suppress(psutil.Error):
                out.extend(p.children(recursive=True))
        return out

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = {n: self._cpu(n) for n in self.procs}

    def stop(self) -> dict[str, tuple[float, float]]:
        wall = time.monotonic() - self.t0
        out = {}
        for n in self.procs:
            rss = 0
            for p in self._tree(n):
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            out[n] = (round((self._cpu(n) - self.cpu0[n]) / wall, 3), round(rss / 2**20, 1))
        return out


@dataclass
class Watch:
    """md.book and sig.* as they pass (raw JSON: the bench must cost the machine little)."""

    books: int = 0
    tickers: set[str] = field(default_factory=set)
    exch: dict[tuple[str, int], int] = field(default_factory=dict)  # (ticker, book ts_event µs) -> ts_exchange µs
    lags: list[float] = field(default_factory=list)  # ms, ts_init - book ts_event
    lags_exch: list[float] = field(default_factory=list)  # ms, ts_init - book ts_exchange
    book_lags: list[float] = field(default_factory=list)  # ms, book seen here - its ts_event (feeds' part)
    signals: int = 0
    recording: bool = False

    async def on_book(self, msg: Any) -> None:
        self.books += 1
        tok = msg.subject.rsplit(".", 1)[-1]
        self.tickers.add(tok)
        if self.recording:
            d = json.loads(msg.data)
            self.book_lags.append((time.time_ns() // 1000 - _us(d["ts_event"])) / 1000)
            if d.get("ts_exchange"):
                self.exch[(d["ticker"], _us(d["ts_event"]))] = _us(d["ts_exchange"])

    async def on_sig(self, msg: Any) -> None:
        self.signals += 1
        if not self.recording:
            return
        d = json.loads(msg.data)
        parts = d["id"].split(":")  # sig:<ticker>:<seq>:<book ts_event µs>:<action>[:...]
        book_us = int(parts[3])
        init = _us(d["ts_init"])
        self.lags.append((init - book_us) / 1000)
        ex = self.exch.pop((parts[1], book_us), None)
        if ex is not None and book_us - ex < 1_000_000:  # a book that changed, not a quiet market's refresh
            self.lags_exch.append((init - ex) / 1000)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = open(log, "wb")  # closed with the process
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
        if p.poll() is None:
            p.kill()
            p.wait(5)


async def _size(target: int, window_s: float, profile_dir: Path | None) -> dict[str, Any]:
    """One world size: start everything, warm up, measure `window_s`, stop everything."""
    from services.sim.scale import series_list

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix=f"kdesk-scale-{target}-") as tmp:
        var = Path(tmp)
        nats = EmbeddedNats(var / "nats").start()
        pg = EmbeddedPostgres(var / "pg", fast_unsafe=True).start()
        bus: Bus | None = None
        try:
            db_url = pg.url("postgres")
            await asyncio.to_thread(upgrade_to_head, db_url)
            prov = await Bus.connect(nats.url, service="bench")
            await prov.provision()
            await prov.close()
            private, keys_dir = _keys(var)
            base = reserve_block("127.0.0.1")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
            env.update({"KDESK_NATS_URL": nats.url, "KDESK_DATABASE_URL": db_url, "KDESK_MODE": "sim",
                        "KDESK_VAR_DIR": str(var), "KDESK_SIM_BASE_PORT": str(base), "KALSHI_SIM_KEY_ID": "desk",
                        "KALSHI_SIM_PRIVATE_KEY_PATH": str(private), "KDESK_SIM_KEYS_DIR": str(keys_dir),
                        "KDESK_FEEDS_SERIES": ",".join(series_list(target)), "KDESK_LOG_LEVEL": "WARNING",
                        "KDESK_LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"})
            sim = _spawn(["-m", "services.sim.scale", "--target", str(target), "--port", str(base), "--keys-dir",
                          str(keys_dir), "--actions-per-s", str(max(10.0, ACTIONS_PER_MARKET_S * target))],
                         env, var / "sim.log")
            procs.append(sim)
            deadline = time.monotonic() + 90
            while "sim_scale_ready" not in (var / "sim.log").read_text(errors="replace"):
                if sim.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("scaled sim did not start:\n" + (var / "sim.log").read_text()[-3000:])
                await asyncio.sleep(0.2)
            listed = int((var / "sim.log").read_text().split("sim_scale_ready markets=")[1].split()[0])

            bus = await Bus.connect(nats.url, service="bench-scale", mode=Mode.SIM)
            watch = Watch()
            await bus.nc.subscribe(bus.wire("md.book.>"), cb=watch.on_book)
            await bus.nc.subscribe(bus.wire("sig.>"), cb=watch.on_sig)
            named: dict[str, subprocess.Popen[bytes]] = {}
            for name in SERVICES:
                args = ["-m", "benchmarks.scale", "--service", name]
                if profile_dir is not None:
                    args += ["--profile", str(profile_dir / f"{target}-{name}.prof")]
                own = dict(env)
                if name == "signals" and os.environ.get("SCALE_SIGNALS_NO_DB"):  # diagnosis: no signal rows
                    own.pop("KDESK_DATABASE_URL")
                named[name] = _spawn(args, own, var / f"{name}.log")
                procs.append(named[name])

            # Warm up: every market's book seen, signals flowing, then a few seconds to settle.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                dead = [n for n, p in named.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"{dead[0]} exited:\n" + (var / f"{dead[0]}.log").read_text()[-3000:])
                if len(watch.tickers) >= 0.98 * listed and watch.signals > 0:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(5)

            sampler = Sampler({"sim": [psutil.Process(sim.pid)], "nats": [psutil.Process(nats.proc.pid)],
                               "postgres": [psutil.Process(pg.proc.pid)],
                               **{n: [psutil.Process(p.pid)] for n, p in named.items()}})
            watch.tickers = set()
            books0, sigs0 = watch.books, watch.signals
            sampler.start()
            watch.recording = True
            await asyncio.sleep(window_s)
            watch.recording = False
            usage = sampler.stop()
            books = (watch.books - books0) / window_s
            sigs = (watch.signals - sigs0) / window_s
            for n, p in named.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{n} exited during the window:\n" + (var / f"{n}.log").read_text()[-3000:])
            return {"listed": listed, "tracked": len(watch.tickers), "books_per_s": round(books, 1),
                    "signals_per_s": round(sigs, 1), "lag_p50": _pct(watch.lags, 50), "lag_p99": _pct(watch.lags, 99),
                    "lag_max": round(max(watch.lags), 3) if watch.lags else float("nan"),
                    "lag_exch_p50": _pct(watch.lags_exch, 50), "lag_exch_p99": _pct(watch.lags_exch, 99),
                    "book_lag_p50": _pct(watch.book_lags, 50), "book_lag_p99": _pct(watch.book_lags, 99),
                    "samples": len(watch.lags), "usage": usage}
        finally:
            if bus is not None:
                with contextlib.suppress(Exception):
                    await bus.close()
            await asyncio.to_thread(_stop, procs, 60.0 if profile_dir is not None else 15.0)
            pg.stop()
            nats.stop()


def _profile_dir() -> Path | None:
    profile = os.environ.get("SCALE_PROFILE_DIR")
    if not profile:
        return None
    out = Path(profile).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


async def run() -> dict[str, float | int | str]:
    """200, 2,000 and 5,000 markets, one after the other; the headline figures come from 2,000."""
    profile_dir = _profile_dir()
    out: dict[str, float | int | str] = {}
    sizes = SIZES
    if os.environ.get("SCALE_SIZES"):  # e.g. "2000:40,5000:20" (a shorter run while working on it)
        sizes = tuple((int(a), float(b)) for a, b in (x.split(":") for x in os.environ["SCALE_SIZES"].split(",")))
    for target, window in sizes:
        r = await _size(target, window, profile_dir)
        print(f"# scale {target}: {json.dumps(r)}", file=sys.stderr)
        out[f"scale_lag_p99_ms_at_{target}"] = r["lag_p99"]
        out[f"scale_lag_p50_ms_at_{target}"] = r["lag_p50"]
        out[f"scale_markets_at_{target}"] = r["tracked"]
        out[f"scale_books_per_s_at_{target}"] = r["books_per_s"]
        out[f"scale_signals_per_s_at_{target}"] = r["signals_per_s"]
        if target == 2000:
            out["markets_tracked"] = r["tracked"]
            out["scale_markets_listed"] = r["listed"]
            out["scale_signal_lag_p50_ms"] = r["lag_p50"]
            out["scale_signal_lag_p99_ms"] = r["lag_p99"]
            out["scale_signal_lag_max_ms"] = r["lag_max"]
            out["scale_signal_lag_samples"] = r["samples"]
            out["scale_signal_lag_from_exchange_p50_ms"] = r["lag_exch_p50"]
            out["scale_signal_lag_from_exchange_p99_ms"] = r["lag_exch_p99"]
            out["scale_book_on_bus_lag_p50_ms"] = r["book_lag_p50"]
            out["scale_book_on_bus_lag_p99_ms"] = r["book_lag_p99"]
            for name, (cpu, rss) in r["usage"].items():
                out[f"scale_cpu_share_{name}"] = cpu
                out[f"scale_rss_mb_{name}"] = rss
    return out


def _service(name: str, profile: str | None) -> None:
    """A desk service as `python -m services.<name>` runs it, knowing the scaled world's stations."""
    import runpy

    from services.sim.scale import install_stations

    install_stations()
    sys.argv = [f"python -m services.{name}"]
    if profile is None:
        runpy.run_module(f"services.{name}", run_name="__main__", alter_sys=True)
        return
    import cProfile

    prof = cProfile.Profile()
    try:
        prof.runcall(runpy.run_module, f"services.{name}", run_name="__main__", alter_sys=True)
    finally:
        prof.dump_stats(profile)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    p.add_argument("--service", choices=SERVICES, required=True)
    p.add_argument("--profile")
    a = p.parse_args()
    _service(a.service, a.profile)
