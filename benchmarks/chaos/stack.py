"""The whole desk as OS processes, the way `kdesk up` runs it, but with the restarts in the campaign's hands.

NATS and PostgreSQL are the embedded servers of `libs/common/embedded.py` on free ports under the campaign's
own directory (never 4222/5432). The simulator runs as `benchmarks.chaos.simhost` (the simulator plus a
control port); feeds, signals, executor (two replicas), resolver and notifier run `services.<name>` as
`__main__` — forked from a zygote that imported them once (benchmarks/chaos/zygote.py; KDESK_CHAOS_FORK=0 runs
`python -m services.<name>` instead) — with the environment `kdesk up` gives them (services/ctl/cli.py:
`sim_environment`, `sim_telegram`). Each process writes to `<root>/log/<name>.log`. A process that dies is
started again after a random delay, as compose's `restart: unless-stopped` would; the campaign counts who
died, who was killed, who came back.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.common.embedded import EmbeddedNats, EmbeddedPostgres, child_preexec, free_port
from libs.common.simnet import SimEndpoints

# Desk services in start order (the simulator first); the executor runs as two replicas.
DESK = ("feeds", "signals", "executor-1", "executor-2", "resolver", "notifier")
OPERATOR = 100000001  # the Telegram user allowed to steer the desk
INTRUDER = 666000666  # a Telegram user nobody authorised

# Caps small enough to bind within minutes of sim trading (the campaign checks them from the exchange's side).
CAPS = {"KDESK_MAX_ORDER_USD": "4", "KDESK_MAX_MARKET_USD": "8", "KDESK_MAX_EVENT_USD": "15",
        "KDESK_MAX_FAMILY_USD": "40", "KDESK_MAX_PORTFOLIO_USD": "60", "KDESK_DAILY_LOSS_LIMIT_USD": "1000"}


class Forked:
    """A child of the zygote, with the part of `subprocess.Popen`'s interface `Proc` uses."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        return self.zygote.exits.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self.zygote.cond:
            if not self.zygote.cond.wait_for(lambda: self.pid in self.zygote.exits, timeout):
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            return self.zygote.exits[self.pid]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


class Zygote:
    """The client of `benchmarks.chaos.zygote`: spawns desk services by forking a process that imported them."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.cond = threading.Condition()
        self.exits: dict[int, int] = {}
        self.replies: dict[int, dict[str, Any]] = {}
        self._next = 0
        self._write = threading.Lock()
        self._reader: threading.Thread | None = None

    def launch(self) -> None:
        """Start the zygote (it imports every service; `wait_ready` waits for it)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.chaos.zygote"], env=self.env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         start_new_session=True, preexec_fn=child_preexec())

    def wait_ready(self) -> None:
        """Until the zygote has imported every service."""
        import json

        assert self.proc is not None
        first = self.proc.stdout.readline() if self.proc.stdout else b""  # type: ignore[union-attr]
        if not first or not json.loads(first).get("ready"):
            raise RuntimeError(f"the zygote did not start; see {self.log_path}")
        self._reader = threading.Thread(target=self._read, name="zygote-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import json

        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.cond:
                if "exit" in msg:
                    self.exits[int(msg["exit"])] = int(msg["code"])
                else:
                    self.replies[int(msg["id"])] = msg
                self.cond.notify_all()
        with self.cond:  # the zygote is gone: so are its children (PDEATHSIG)
            self.replies[-1] = {"error": "zygote exited"}
            self.cond.notify_all()

    def spawn(self, module: str, env: dict[str, str], log: Path) -> Forked:
        """Fork a child running `module` as `python -m module` would."""
        import json

        assert self.proc is not None and self.proc.stdin is not None
        with self._write:
            self._next += 1
            rid = self._next
            self.proc.stdin.write((json.dumps({"id": rid, "module": module, "env": env, "log": str(log)}) + "\n")
                                  .encode())
            self.proc.stdin.flush()
        with self.cond:
            if not self.cond.wait_for(lambda: rid in self.replies or -1 in self.replies, 30):
                raise RuntimeError("the zygote did not answer a spawn in 30 s")
            msg = self.replies.pop(rid, None) or self.replies[-1]
        if "pid" not in msg:
            raise RuntimeError(f"zygote spawn of {module}: {msg.get('error')}")
        return Forked(self, int(msg["pid"]))

    def stop(self) -> None:
        """Close its stdin (it exits, its children get SIGTERM), then make sure."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)  # it ends at the pipe's EOF
        with contextlib.suppress(Exception):
            self.proc.stdout.close()  # type: ignore[union-attr]


@dataclass
class Proc:
    """One supervised process and what happened to it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: Any = None  # subprocess.Popen, or a Forked child of the zygote
    zygote: Zygote | None = None
    module: str = ""
    starts: int = 0
    killed: int = 0  # SIGKILLs by the campaign
    crashes: int = 0  # exits nobody asked for
    restart_at: float | None = None  # monotonic time of the pending restart
    exits: list[tuple[float, int, bool]] = field(default_factory=list)  # (when, code, killed by us)
    _expect_exit: bool = False

    @property
    def running(self) -> bool:
        """The process is alive."""
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        """Spawn it (output appended to its log), in its own session; it dies with us (PDEATHSIG)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.zygote is not None:
            self.popen = self.zygote.spawn(self.module, self.env, self.log_path)
        else:
          with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=child_preexec())
        self.starts += 1
        self.restart_at = None
        self._expect_exit = False

    def kill(self) -> None:
        """SIGKILL the process group (no clean shutdown: a crash)."""
        if self.running:
            assert self.popen is not None
            self._expect_exit = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):  # a child forked an instant ago: no session of its own yet
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
            self.killed += 1
            self.exits.append((time.monotonic(), self.popen.returncode, True))

    def poll_exit(self) -> bool:
        """True once when the process exited on its own (a crash); the exit is recorded."""
        if self.popen is None or self.popen.poll() is None or self._expect_exit:
            return False
        self._expect_exit = True  # recorded once
        self.crashes += 1
        self.exits.append((time.monotonic(), self.popen.returncode, False))
        return True

    def stop(self, timeout: float = 7.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if not self.running:
            return
        assert self.popen is not None
        self._expect_exit = True
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


class Stack:
    """NATS, PostgreSQL, the simulator and the desk's services under `root`."""

    def __init__(self, root: Path, *, seed: int, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.seed = seed
        self.var = root / "var"
        self.log_dir = root / "log"
        self.nats = EmbeddedNats(root / "nats")
        self.pg = EmbeddedPostgres(root / "pg" / "data", fast_unsafe=False)
        # Secrets the campaign later looks for in every log line and stored row.
        self.db_password = "pw-" + secrets.token_hex(12)
        self.telegram_token = f"7000000042:CHAOS-{secrets.token_urlsafe(24)}"
        self.sim = SimEndpoints("127.0.0.1", 0)
        self.control_port = free_port()
        self.extra_env = extra_env or {}
        # Desk services forked from a zygote that imported them (fast restarts); KDESK_CHAOS_FORK=0: plain exec.
        self.fork = os.environ.get("KDESK_CHAOS_FORK", "1") != "0"
        self.zygote: Zygote | None = None
        self.procs: dict[str, Proc] = {}
        self.env: dict[str, str] = {}

    @property
    def db_url(self) -> str:
        """The desk's database URL, password included (the embedded server trusts local connections)."""
        return f"postgresql+psycopg://postgres:{self.db_password}@{self.pg.host}:{self.pg.port}/kdesk"

    @property
    def libpq_url(self) -> str:
        """The same URL for psycopg."""
        return self.db_url.replace("postgresql+psycopg", "postgresql")

    @property
    def control_url(self) -> str:
        """The simulator's control API (benchmarks/chaos/simhost.py)."""
        return f"http://127.0.0.1:{self.control_port}"

    def start_infra(self) -> None:
        """NATS and PostgreSQL, migrations, streams."""
        import asyncio

        from libs.common.db.migrate import upgrade_to_head
        from services.ctl.cli import _provision

        self.nats.start()
        self.pg.start()
        upgrade_to_head(self.db_url)
        asyncio.run(_provision(self.nats.url, _settings()))

    def base_env(self) -> dict[str, str]:
        """What `kdesk up` hands every service in sim mode."""
        from libs.common.config import load_settings
        from services.ctl.cli import sim_environment

        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
        s = load_settings(var_dir=str(self.var))
        sim = sim_environment(s, self.var)
        self.sim = SimEndpoints("127.0.0.1", int(sim["KDESK_SIM_BASE_PORT"]))
        env = {**clean, "KDESK_NATS_URL": self.nats.url, "KDESK_DATABASE_URL": self.db_url, "KDESK_MODE": "sim",
               "KDESK_VAR_DIR": str(self.var), **sim, "KDESK_LOG_FORMAT": "json", "KDESK_LOG_LEVEL": "INFO",
               "KDESK_TELEGRAM_API_URL": self.sim.telegram_url, "KDESK_TELEGRAM_BOT_TOKEN": self.telegram_token,
               "KDESK_SIM_TELEGRAM_TOKEN": self.telegram_token, "KDESK_TELEGRAM_OPERATORS": str(OPERATOR),
               "KDESK_SIM_SEED": str(self.seed), "KDESK_CHAOS_CONTROL_PORT": str(self.control_port),
               "KDESK_RECONCILE_INTERVAL_S": "20", "KDESK_HEALTH_INTERVAL_S": "2", "KDESK_ALERT_COOLDOWN_S": "0",
               "KDESK_ALERT_DAILY_CAP": "100000", "PYTHONUNBUFFERED": "1", **CAPS, **self.extra_env}
        self.env = env
        return env

    def define(self) -> None:
        """The process table: the simulator, then the desk."""
        env = self.base_env()
        py = sys.executable
        if self.fork:
            self.zygote = Zygote({**env, "KDESK_INSTANCE": "zygote"}, self.log_dir / "zygote.log")
        self.procs["sim"] = Proc("sim", [py, "-m", "benchmarks.chaos.simhost"], {**env, "KDESK_INSTANCE": "sim"},
                                 self.log_dir / "sim.log")
        for name in DESK:
            service = name.split("-")[0]
            self.procs[name] = Proc(name, [py, "-m", f"services.{service}"], {**env, "KDESK_INSTANCE": name},
                                    self.log_dir / f"{name}.log", zygote=self.zygote, module=f"services.{service}")

    def start_all(self) -> None:
        """Every process, the simulator first (the desk connects to it)."""
        import httpx

        self.procs["sim"].start()
        if self.zygote is not None:
            self.zygote.launch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.sim.kalshi_rest_url + "/exchange/status", timeout=1).status_code == 200 and \
                        httpx.get(self.control_url + "/ping", timeout=1).status_code == 200:
                    break
            if not self.procs["sim"].running:
                raise RuntimeError("the simulator exited at start; see " + str(self.procs["sim"].log_path))
            time.sleep(0.3)
        else:
            raise RuntimeError("the simulator did not come up within 60 s")
        if self.zygote is not None:
            self.zygote.wait_ready()
        for name in DESK:
            self.procs[name].start()

    def restart_nats(self, down_s: float | None = None) -> None:
        """Kill the single NATS node (SIGKILL) and start it again on the same port and store after `down_s`."""
        self.nats.kill()
        time.sleep(self.rng.uniform(0.2, 2.0) if down_s is None else down_s)
        self.nats.start()

    def restart_postgres(self, down_s: float | None = None) -> None:
        """Immediate shutdown (SIGQUIT: no checkpoint, crash recovery at start), then start again."""
        proc = self.pg.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        time.sleep(self.rng.uniform(0.2, 2.0) if down_s is None else down_s)
        self.pg.start()

    def stop_all(self) -> None:
        """Desk services, then the simulator, then NATS and PostgreSQL."""
        for name in reversed(DESK):
            if name in self.procs:
                self.procs[name].stop()
        if self.zygote is not None:
            self.zygote.stop()
        if "sim" in self.procs:
            self.procs["sim"].stop()
        with contextlib.suppress(Exception):
            self.nats.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()


def _settings():  # type: ignore[no-untyped-def]
    from libs.common.config import load_settings

    return load_settings()
