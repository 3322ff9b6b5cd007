"""Request signing: RSA-PSS / SHA-256 (salt = digest length) over `timestamp_ms + METHOD + path`.

The path is the URL path from the host root including `/trade-api/v2` and excluding the query
string; the body is not signed (kalshi_api.md §2.2–2.3). The same signature scheme authenticates
the WebSocket handshake with `GET` and `/trade-api/ws/v2`.

Signing ahead: an RSA-2048 PSS signature costs ~0.7-1 ms of CPU, about a third of the desk's wire-to-wire
budget, and the order create is the one request whose latency is money. Since the body is not signed, the
headers of the next create can be made before the order exists (`prepare`); `sign` hands them out once, and
only while their timestamp is at most `ahead_max_age_ms` old — as if the desk's clock were that much behind,
far inside any skew an exchange must tolerate (kalshi_api.md §2.4: no documented window; FIX allows 30 s).
Each prepared signature is used for one request only: nothing is ever sent twice with the same headers.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from libs.common.kalshi.errors import ConfigurationError

KEY_HEADER = "KALSHI-ACCESS-KEY"
TS_HEADER = "KALSHI-ACCESS-TIMESTAMP"
SIG_HEADER = "KALSHI-ACCESS-SIGNATURE"


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Load an RSA private key from a PEM file (never echoing its content in errors)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigurationError(f"cannot read the Kalshi private key file {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{path} holds a {type(key).__name__}; Kalshi keys used here are RSA")
    return key


AHEAD_MAX_AGE_MS = 1_000


def _request_key(method: str, url_or_path: str) -> tuple[str, str]:
    """What a signature covers besides the time: the method and the path without host or query."""
    return method.upper(), urlsplit(url_or_path).path


class Signer:
    """Produces the three auth headers for one API key."""

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000, *,
                 ahead_max_age_ms: int = AHEAD_MAX_AGE_MS) -> None:
        self.key_id = key_id
        self._key = private_key
        self._clock_ms = clock_ms
        self.ahead_max_age_ms = ahead_max_age_ms
        self._ahead: dict[tuple[str, str], dict[str, str]] = {}  # (METHOD, path) -> headers signed ahead, one use
        self.signed_ahead_used = 0

    def __repr__(self) -> str:
        return "Signer(key_id=***)"

    def sign(self, method: str, url_or_path: str) -> dict[str, str]:
        """Headers for a request to `url_or_path` (a full URL or a path; any query is not signed): the ones
        `prepare`d for it if they are young enough (handed out once), else signed now."""
        key = _request_key(method, url_or_path)
        ready = self._ahead.pop(key, None)  # one atomic step: a thread preparing the next cannot hand it twice
        if ready is not None and 0 <= self._clock_ms() - int(ready[TS_HEADER]) <= self.ahead_max_age_ms:
            self.signed_ahead_used += 1
            return ready
        return self._headers(*key)

    def prepare(self, method: str, url_or_path: str) -> None:
        """Sign the next request to `url_or_path` now (CPU only, no I/O: may run in a worker thread)."""
        key = _request_key(method, url_or_path)
        self._ahead[key] = self._headers(*key)

    def ahead_age_ms(self, method: str, url_or_path: str) -> int | None:
        """How old the headers prepared for `url_or_path` are (None: none waiting)."""
        ready = self._ahead.get(_request_key(method, url_or_path))
        return None if ready is None else self._clock_ms() - int(ready[TS_HEADER])

    def _headers(self, method: str, path: str) -> dict[str, str]:
        ts = str(self._clock_ms())
        message = f"{ts}{method}{path}".encode()
        sig = self._key.sign(
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256(),
        )
        return {KEY_HEADER: self.key_id, TS_HEADER: ts, SIG_HEADER: base64.b64encode(sig).decode()}
