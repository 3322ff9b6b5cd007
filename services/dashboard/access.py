"""Who may see the dashboard and who may steer it: the binding rule, the two tokens, signed session cookies.

- Bound to a loopback address (the default, 127.0.0.1) the page is open to this machine's users; bound to
  anything else it needs KDESK_DASHBOARD_TOKEN, and `check_binding` refuses to start without one. A token
  that is set is required on loopback too.
- KDESK_DASHBOARD_OPERATOR_TOKEN makes a session an operator's: only then are pause and resume offered.
  Without it there are no controls at all. It also opens the page (an operator is a viewer too).
- A token is presented once at /login (or as `Authorization: Bearer <token>` by a script); the browser then
  holds a cookie `<role>.<issued>.<session id>.<mac>`, an HMAC-SHA256 keyed by that role's token. Nothing is stored on
  the server, a restart keeps sessions, and changing a token ends every session made with it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from libs.common.config import ConfigError, Settings

Role = Literal["viewer", "operator"]
COOKIE = "kdesk_dashboard"
SESSION_S = 12 * 3600.0  # a login lasts a working day


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); a host name is not known to be one."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a login token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"KDESK_DASHBOARD_TOKEN is not set, but KDESK_DASHBOARD_HOST={host} would serve the dashboard beyond "
            "this machine with no login: set KDESK_DASHBOARD_TOKEN (16+ characters, e.g. `python -c 'import "
            "secrets; print(secrets.token_urlsafe())'`), or bind to 127.0.0.1")


def _mac(key: str, role: str, issued: int, sid: str) -> str:
    return hmac.new(key.encode(), f"kdesk-dashboard:{role}:{issued}:{sid}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Access:
    """The dashboard's tokens (None: not configured) and what a request may do with what it presents."""

    login_token: str | None
    operator_token: str | None
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def from_settings(cls, s: Settings) -> Access:
        """The tokens of KDESK_DASHBOARD_TOKEN and KDESK_DASHBOARD_OPERATOR_TOKEN."""
        return cls(s.dashboard_token.get_secret_value() if s.dashboard_token else None,
                   s.dashboard_operator_token.get_secret_value() if s.dashboard_operator_token else None)

    @property
    def login_required(self) -> bool:
        """Whether looking needs a token."""
        return self.login_token is not None

    @property
    def controls(self) -> bool:
        """Whether anyone may steer (an operator token is configured)."""
        return self.operator_token is not None

    def secrets(self) -> tuple[str, ...]:
        """The configured tokens, for the last check that no answer ever carries one."""
        return tuple(t for t in (self.login_token, self.operator_token) if t)

    def _key(self, role: Role) -> str | None:
        return self.operator_token if role == "operator" else self.login_token

    def role_for_token(self, presented: str) -> Role | None:
        """The role a presented token grants (compared in constant time), or None."""
        given = presented.strip().encode()
        if self.operator_token and hmac.compare_digest(given, self.operator_token.encode()):
            return "operator"
        if self.login_token and hmac.compare_digest(given, self.login_token.encode()):
            return "viewer"
        return None

    def cookie_for(self, role: Role) -> str:
        """A session cookie's value for `role` (its token must be configured)."""
        key = self._key(role)
        if key is None:
            raise ValueError(f"no token is configured for the {role} role")
        issued = int(self.clock())
        sid = secrets.token_hex(8)  # two logins in one second are two sessions (a confirmation is bound to one)
        return f"{role}.{issued}.{sid}.{_mac(key, role, issued, sid)}"

    def role_for_cookie(self, value: str | None) -> Role | None:
        """The role of a valid, unexpired session cookie, else None."""
        if not value:
            return None
        try:
            role, issued_text, sid, mac = value.split(".", 3)
            issued = int(issued_text)
        except ValueError:
            return None
        if role not in ("viewer", "operator"):
            return None
        key = self._key(role)  # type: ignore[arg-type]
        if key is None or not 0 <= self.clock() - issued <= SESSION_S:
            return None
        return role if hmac.compare_digest(mac, _mac(key, role, issued, sid)) else None  # type: ignore[return-value]

    def role(self, *, cookie: str | None, authorization: str | None) -> Role | None:
        """What a request may do: its bearer token or session cookie, else viewer when no login is required."""
        if authorization and authorization.lower().startswith("bearer "):
            return self.role_for_token(authorization[7:])
        found = self.role_for_cookie(cookie)
        if found is not None:
            return found
        return None if self.login_required else "viewer"


__all__ = ["COOKIE", "SESSION_S", "Access", "Role", "check_binding", "is_loopback"]
