"""What `kdesk up` writes under the var directory is its owner's alone (README: Going live safely).

Keys, the run file, the services' logs and the embedded NATS/PostgreSQL data hold secrets or what leads to
them, so `kdesk up` runs under `UMASK` (every file and directory it and its children create is 0600/0700),
writes its own files with an explicit 0600 (`write_private`), and on start takes group and other access off
whatever an earlier run left (`tighten`). `benchmarks/chaos/security.py` checks the result.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077  # nothing for group or others
FILE_MODE, DIR_MODE = 0o600, 0o700


def owner_only_umask() -> int:
    """Set the process umask so that nothing created from here on is readable by group or others; the old one."""
    return os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can open; missing parents are made 0700 too (mkdir's `parents`
    would make them with the umask's default)."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        p.mkdir(mode=DIR_MODE, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(DIR_MODE)
    return path


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to `path`, created 0600 (never readable by anyone else, not even for a moment).

    `exclusive`: fail with FileExistsError when the file exists (a key is made once).
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through O_TRUNC
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def open_private_log(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600 (an existing file is made 0600 too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
        os.fchmod(fd, FILE_MODE)
    return fd


def tighten(root: Path) -> list[Path]:
    """Take group and other read/write/execute off every file and directory under `root` (and `root`)
    that this user owns; symlinks, sockets and other users' files are left alone. The paths changed."""
    me = os.geteuid()
    changed: list[Path] = []

    def fix(p: Path) -> None:
        try:
            st = p.lstat()
        except OSError:
            return
        if st.st_uid != me or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            try:
                p.chmod(mode & ~0o077)
                changed.append(p)
            except OSError:
                pass

    if not root.is_dir():
        return changed
    fix(root)
    for top, dirs, files in os.walk(root):
        here = Path(top)
        for name in (*dirs, *files):
            fix(here / name)
    return changed


__all__ = ["DIR_MODE", "FILE_MODE", "UMASK", "open_private_log", "owner_only_umask", "private_dir", "tighten",
           "write_private"]
