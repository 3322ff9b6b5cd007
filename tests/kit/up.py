"""Running `kdesk up` as a child process the way an operator would, and reading its start-up output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

READY = "Ctrl-C stops everything"


def start_up(var: Path, **env_extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`kdesk up` with a clean KDESK_/KALSHI_ environment plus `env_extra`; returns once it says it is up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_"))}
    env.update({"KDESK_VAR_DIR": str(var), "KDESK_LOG_FORMAT": "console", **env_extra})
    proc = subprocess.Popen([sys.executable, "-m", "services.ctl", "up", "--status-every", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if READY in line:
            return proc, out
    proc.kill()
    raise AssertionError("kdesk up did not come up:\n" + "".join(out))
