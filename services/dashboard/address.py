"""Where the dashboard listens and the address to open it at (`kdesk up` prints it; the health probe uses it)."""

from __future__ import annotations

import contextlib
import socket


def local_url(host: str, port: int) -> str:
    """The page's address from this machine: a wildcard bind is reached at 127.0.0.1 (or [::1])."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); OSError when it cannot be had (in use, no such address)."""
    family, _, _, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                               flags=socket.AI_PASSIVE)[0]
    return socket.create_server(addr, family=family, reuse_port=False)


def port_free(host: str, port: int) -> bool:
    """Whether (host, port) can be listened on now."""
    try:
        sock = listen(host, port)
    except OSError:
        return False
    sock.close()
    return True


def free_port(host: str) -> int:
    """A port the system says is free on `host` now."""
    with contextlib.closing(listen(host, 0)) as sock:
        return int(sock.getsockname()[1])


__all__ = ["free_port", "listen", "local_url", "port_free"]
