"""`python -m benchmarks.chaos.zygote`: a fork server for the desk's services (what makes a kill every ~3 s possible).

A service's `python -m services.<name>` spends 2 s (the notifier 10 s) of CPU importing its modules before it runs a
line of its own; a campaign that SIGKILLs and restarts each service every few seconds on a 2-core box would spend
its time importing. The zygote imports every service's modules once, then, for each `spawn` request, forks a
child that runs `services.<name>` as `__main__` exactly as `python -m` would (runpy), from the top: its own
settings from its own environment, its own connections, subscriptions and recovery. Nothing of a previous instance
survives in it — only the imported code is shared. Each child is a session leader (the campaign SIGKILLs its
process group) and dies with the zygote (PDEATHSIG).

Protocol, JSON lines: stdin `{"id", "module", "env", "log"}` -> stdout `{"id", "pid"}` (or `{"id", "error"}`);
whenever a child ends, stdout `{"exit": pid, "code": returncode}` (negative: killed by that signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import select
import signal
import sys
import traceback

MODULES = ("services.feeds", "services.signals", "services.executor", "services.resolver", "services.notifier")
_PR_SET_PDEATHSIG = 1


def _say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _child(module: str, env: dict[str, str], log: str, control_fds: tuple[int, ...]) -> None:
    """In the forked child: a new session, output to the log, the environment replaced, the module as __main__."""
    code = 1
    try:
        os.setsid()
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # replaces the zygote's control pipes on 0 and 1
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in {out, null, *control_fds} - {0, 1, 2}:
            with contextlib.suppress(OSError):
                os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [module]
        import runpy

        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        text = traceback.format_exc()
        with contextlib.suppress(Exception):
            with open(log, "a") as f:
                f.write(text)
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> None:
    """Import, then serve spawn requests until stdin closes."""
    for m in MODULES:
        importlib.import_module(m + ".__main__")  # the service and everything it imports; its main does not run
    import runpy  # noqa: F401 - imported before forking

    _say({"ready": True, "pid": os.getpid()})
    stdin = sys.stdin.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.05)
        _reap()
        if not ready:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            req = json.loads(line)
            try:
                pid = os.fork()
            except OSError as e:
                _say({"id": req.get("id"), "error": str(e)})
                continue
            if pid == 0:
                _child(str(req["module"]), dict(req["env"]), str(req["log"]), (stdin, sys.stdout.fileno()))
            _say({"id": req.get("id"), "pid": pid})
    for _ in range(50):  # stdin closed: the campaign is done; let the children go with us
        _reap()
        select.select([], [], [], 0.02)


if __name__ == "__main__":
    main()
