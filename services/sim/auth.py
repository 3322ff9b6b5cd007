"""Request authentication for the simulated exchange: Kalshi's RSA-PSS signed headers.

A request carries `KALSHI-ACCESS-KEY`, `KALSHI-ACCESS-TIMESTAMP` (Unix ms) and
`KALSHI-ACCESS-SIGNATURE`: base64 of an RSA-PSS signature (SHA-256, MGF1-SHA-256, salt length =
digest length, 32 bytes) over `timestamp + METHOD + path`, where the path starts at the host root
(so it includes `/trade-api/v2`) and stops before the query string (kalshi_api.md §2.2–2.3). The
WebSocket handshake signs `GET` + `/trade-api/ws/v2` the same way.

Kalshi documents no skew window; the simulator rejects timestamps more than 30 s away from its
clock (kalshi_api.md §2.4, our choice). A timestamp sent in seconds instead of ms lands in 1970
and fails that check, which is the most common client bug this is meant to catch.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_HEADER = "KALSHI-ACCESS-KEY"
TS_HEADER = "KALSHI-ACCESS-TIMESTAMP"
SIG_HEADER = "KALSHI-ACCESS-SIGNATURE"
AUTH_HEADERS = (KEY_HEADER, TS_HEADER, SIG_HEADER)
MAX_SKEW_MS = 30_000

# Kalshi wraps its gRPC status in `details`; the observed 401 reads exactly like this (kalshi_api.md §2.5).
_DETAILS_PREFIX = "rpc error: code = Unauthenticated desc = "


class AuthError(Exception):
    """A request failed authentication; `reason` is the upper-case code put in `error.details`."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(f"{reason}: {hint}" if hint else reason)
        self.reason = reason
        self.hint = hint

    @property
    def details(self) -> str:
        """The `error.details` string of the 401 body."""
        return _DETAILS_PREFIX + self.reason + (f" ({self.hint})" if self.hint else "")

    def body(self) -> dict[str, dict[str, str]]:
        """The 401 response body, Kalshi's shape."""
        return {"error": {"code": "authentication_error", "message": "authentication_error", "details": self.details}}


def wall_clock_ms() -> int:
    """Wall-clock Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from PEM, raising ValueError with a readable message otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"not a PEM public key: {e}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"expected an RSA public key, got {type(key).__name__}")
    return key


def verify_signature(public_key: rsa.RSAPublicKey, timestamp: str, method: str, path: str, signature_b64: str) -> bool:
    """Return True when `signature_b64` is Kalshi's RSA-PSS signature of `timestamp + METHOD + path`."""
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    message = f"{timestamp}{method}{path}".encode()
    try:
        # Salt length is fixed at the digest length: PSS.AUTO would also accept other salt lengths,
        # which real Kalshi does not, so a client signing with MAX_LENGTH must fail here too.
        public_key.verify(sig, message,
                          padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                          hashes.SHA256())
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class ApiKey:
    """A registered API key: its public half and the user it acts for."""

    key_id: str
    public_key: rsa.RSAPublicKey
    user_id: str


class KeyRing:
    """The exchange's registered API keys, and the check of a signed request against them."""

    def __init__(self, clock_ms: Callable[[], int] = wall_clock_ms, max_skew_ms: int = MAX_SKEW_MS) -> None:
        self._keys: dict[str, ApiKey] = {}
        self.clock_ms = clock_ms
        self.max_skew_ms = max_skew_ms

    def register(self, key_id: str, public_key_pem: bytes, user_id: str) -> ApiKey:
        """Register (or replace) a key id with its RSA public key PEM, acting for `user_id`."""
        if not key_id:
            raise ValueError("key_id must be a non-empty string")
        key = ApiKey(key_id, load_public_key(public_key_pem), user_id)
        self._keys[key_id] = key
        return key

    def remove(self, key_id: str) -> None:
        """Forget a key; its signatures are refused from now on."""
        self._keys.pop(key_id, None)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def key_ids(self) -> list[str]:
        """Registered key ids."""
        return list(self._keys)

    @staticmethod
    def has_auth(headers: Mapping[str, str]) -> bool:
        """True when any of the three auth headers is present (so the request means to authenticate)."""
        return any(h in headers for h in AUTH_HEADERS)

    def verify(self, method: str, path: str, headers: Mapping[str, str]) -> str:
        """Return the user id of a correctly signed request, or raise AuthError saying why not.

        `path` is the request path as sent (from the host root, without the query string);
        `headers` must look names up case-insensitively (aiohttp's and httpx's headers do).
        """
        missing = [h for h in AUTH_HEADERS if not headers.get(h)]
        if missing:
            raise AuthError("MISSING_AUTH_HEADERS", "missing " + ", ".join(missing))
        key_id, ts, sig = (headers[h] for h in AUTH_HEADERS)
        key = self._keys.get(key_id)
        if key is None:
            raise AuthError("INVALID_API_KEY", "unknown API key id")
        if not ts.isascii() or not ts.isdigit():
            raise AuthError("INVALID_TIMESTAMP", "KALSHI-ACCESS-TIMESTAMP must be Unix time in milliseconds")
        skew = int(ts) - self.clock_ms()
        if abs(skew) > self.max_skew_ms:
            hint = f"timestamp is {skew / 1000:+.0f} s from the exchange clock (allowed ±{self.max_skew_ms // 1000} s)"
            if len(ts) <= 10:
                hint += "; it looks like seconds, Kalshi wants milliseconds"
            raise AuthError("TIMESTAMP_OUT_OF_RANGE", hint)
        if not verify_signature(key.public_key, ts, method.upper(), path.split("?", 1)[0], sig):
            raise AuthError("INCORRECT_API_KEY_SIGNATURE")
        return key.user_id
