"""`<var>/run.json`: how a second terminal finds the desk `kdesk up` is running.

Written once the servers are up, removed on stop. It holds the NATS URL, the database URL (only when
it carries no password: embedded servers trust local connections), the mode, the start time and the
supervisor's pid. A file left by a `kdesk up` that was killed is recognised by its pid and ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from services.ctl.private import write_private

NAME = "run.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    nats_url: str
    database_url: str | None
    mode: str
    started_at: str
    pid: int
    # Sim mode: the simulator's fake Telegram Bot API and the operator id `kdesk chat` speaks as.
    telegram_fake_url: str | None = None
    chat_user_id: int | None = None


def _without_secret(url: str | None) -> str | None:
    if not url:
        return None
    return None if urlsplit(url).password else url


def write(var: Path, *, nats_url: str, database_url: str | None, mode: str, telegram_fake_url: str | None = None,
          chat_user_id: int | None = None) -> Path:
    path = var / NAME
    info = RunInfo(nats_url=nats_url if not urlsplit(nats_url).password else nats_url.split("@")[-1],
                   database_url=_without_secret(database_url), mode=mode,
                   started_at=datetime.now(UTC).isoformat(timespec="seconds"), pid=os.getpid(),
                   telegram_fake_url=telegram_fake_url, chat_user_id=chat_user_id)
    tmp = path.with_suffix(".tmp")
    write_private(tmp, (json.dumps(asdict(info), indent=2) + "\n").encode())  # 0600 from its creation
    tmp.replace(path)
    return path


def remove(var: Path) -> None:
    path = var / NAME
    try:
        info = read(var, check_alive=False)
        if info is None or info.pid == os.getpid():
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(var: Path, *, check_alive: bool = True) -> RunInfo | None:
    """The running desk's details, or None (no file, unreadable, or its `kdesk up` is gone)."""
    try:
        data = json.loads((var / NAME).read_text())
        info = RunInfo(**{k: data[k] for k in RunInfo.__dataclass_fields__ if k in data})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_alive and not _alive(info.pid):
        return None
    return info


__all__ = ["NAME", "RunInfo", "read", "remove", "write"]
