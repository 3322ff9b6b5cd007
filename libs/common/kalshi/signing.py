"""Request signing: RSA-PSS / SHA-256 (salt = digest length) over `timestamp_ms + METHOD + path`.

The path is the URL path from the host root including `/trade-api/v2` and excluding the query
string; the body is not signed (kalshi_api.md §2.2–2.3). The same signature scheme authenticates
the WebSocket handshake with `GET` and `/trade-api/ws/v2`.
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


class Signer:
    """Produces the three auth headers for one API key."""

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.key_id = key_id
        self._key = private_key
        self._clock_ms = clock_ms

    def __repr__(self) -> str:
        return "Signer(key_id=***)"

    def sign(self, method: str, url_or_path: str) -> dict[str, str]:
        """Headers for a request to `url_or_path` (a full URL or a path; any query is not signed)."""
        path = urlsplit(url_or_path).path
        ts = str(self._clock_ms())
        message = f"{ts}{method.upper()}{path}".encode()
        sig = self._key.sign(
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256(),
        )
        return {KEY_HEADER: self.key_id, TS_HEADER: ts, SIG_HEADER: base64.b64encode(sig).decode()}
