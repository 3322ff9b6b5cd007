"""The local supervisor with real child processes: restart with backoff, clean stop, no orphans."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psutil

from services.ctl.supervisor import ServiceSpec, Supervisor, discover


def py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


async def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_dying_service_is_restarted_with_backoff_and_reported(tmp_path: Path) -> None:
    lines: list[str] = []
    crash = ServiceSpec("crashy", py("import sys; print('boom', flush=True); sys.exit(3)"))
    steady = ServiceSpec("steady", py("import time; print('up', flush=True); time.sleep(60)"))
    sup = Supervisor([crash, steady], backoff_base_s=0.1, backoff_cap_s=0.2, say=lines.append, log_dir=tmp_path)
    stop = asyncio.Event()
    await sup.start()
    watcher = asyncio.create_task(sup.watch(stop, tick_s=0.02))
    await wait_for(lambda: sup.children[0].restarts >= 3)
    stop.set()
    await watcher
    steady_pid = sup.children[1].proc.pid  # type: ignore[union-attr]
    await sup.stop()

    exits = [line for line in lines if "crashy" in line and "exited with code 3" in line]
    assert len(exits) >= 3
    assert "restarting in 0s (restart #1)" in exits[0]  # backoff rounds to whole seconds in the message
    assert "(restart #3)" in exits[2]
    assert sup.children[1].restarts == 0, "a healthy service is not restarted"
    assert "[crashy] boom" in lines
    assert (tmp_path / "crashy.log").read_bytes().count(b"boom") >= 3
    assert not psutil.pid_exists(steady_pid) or psutil.Process(steady_pid).status() == psutil.STATUS_ZOMBIE
    status = sup.status_lines()
    assert status[0].startswith("crashy") and "last exit 3" in status[0]


async def test_stop_kills_a_service_that_ignores_sigterm(tmp_path: Path) -> None:
    lines: list[str] = []
    stubborn = ServiceSpec("stubborn", py(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(60)"))
    sup = Supervisor([stubborn], stop_timeout_s=0.5, say=lines.append)
    await sup.start()
    await wait_for(lambda: "[stubborn] ready" in lines)
    pid = sup.children[0].proc.pid  # type: ignore[union-attr]
    await sup.stop()
    assert any("did not stop within" in line for line in lines)
    assert not psutil.pid_exists(pid)


def test_discover_starts_only_implemented_services(tmp_path: Path) -> None:
    for name in ("feeds", "signals"):
        (tmp_path / name).mkdir()
    (tmp_path / "feeds" / "__main__.py").write_text("")
    present, missing = discover(tmp_path, order=("feeds", "signals"))
    assert [s.name for s in present] == ["feeds"]
    assert present[0].argv[1:] == ("-m", "services.feeds")
    assert missing == ["signals"]
