"""The whole desk as OS processes, the way `kdesk up` runs it, but with the restarts in the campaign's hands.

NATS and PostgreSQL are the embedded servers of `libs/common/embedded.py` on free ports under the campaign's
own directory (never 4222/5432). The simulator runs as `benchmarks.chaos.simhost` (the simulator plus a
control port); feeds, signals, executor (two replicas), resolver and notifier run as `python -m services.<name>`
with the environment `kdesk up` gives them (services/ctl/cli.py: `sim_environment`, `sim_telegram`). Each
process writes to `<root>/log/<name>.log`. A process that dies is started again after a random delay, as
compose's `restart: unless-stopped` would; the campaign counts who died, who was killed, who came back.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from libs.common.embedded import EmbeddedNats, EmbeddedPostgres, child_preexec, free_port
from libs.common.simnet import SimEndpoints

# Desk services in start order (the simulator first); the executor runs as two replicas.
DESK = ("feeds", "signals", "executor-1", "executor-2", "resolver", "notifier")
OPERATOR = 100000001  # the Telegram user allowed to steer the desk
INTRUDER = 666000666  # a Telegram user nobody authorised

# Caps small enough to bind within minutes of sim trading (the campaign checks them from the exchange's side).
CAPS = {"KDESK_MAX_ORDER_USD": "4", "KDESK_MAX_MARKET_USD": "8", "KDESK_MAX_EVENT_USD": "15",
        "KDESK_MAX_FAMILY_USD": "40", "KDESK_MAX_PORTFOLIO_USD": "60", "KDESK_DAILY_LOSS_LIMIT_USD": "1000"}


@dataclass
class Proc:
    """One supervised process and what happened to it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
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
        self.procs["sim"] = Proc("sim", [py, "-m", "benchmarks.chaos.simhost"], {**env, "KDESK_INSTANCE": "sim"},
                                 self.log_dir / "sim.log")
        for name in DESK:
            service = name.split("-")[0]
            self.procs[name] = Proc(name, [py, "-m", f"services.{service}"], {**env, "KDESK_INSTANCE": name},
                                    self.log_dir / f"{name}.log")

    def start_all(self) -> None:
        """Every process, the simulator first (the desk connects to it)."""
        import httpx

        self.procs["sim"].start()
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
        for name in DESK:
            self.procs[name].start()

    def restart_nats(self) -> None:
        """Kill the single NATS node and start it again on the same port and store."""
        self.nats.kill()
        time.sleep(self.rng.uniform(0.2, 2.0))
        self.nats.start()

    def restart_postgres(self) -> None:
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
        time.sleep(self.rng.uniform(0.2, 2.0))
        self.pg.start()

    def stop_all(self) -> None:
        """Desk services, then the simulator, then NATS and PostgreSQL."""
        for name in reversed(DESK):
            if name in self.procs:
                self.procs[name].stop()
        if "sim" in self.procs:
            self.procs["sim"].stop()
        with contextlib.suppress(Exception):
            self.nats.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()


def _settings():  # type: ignore[no-untyped-def]
    from libs.common.config import load_settings

    return load_settings()
