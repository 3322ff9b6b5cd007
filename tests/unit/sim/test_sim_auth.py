"""The simulator's signature check accepts what Kalshi accepts and refuses the classic client bugs."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from services.sim.auth import KEY_HEADER, SIG_HEADER, TS_HEADER, AuthError, KeyRing, verify_signature

NOW_MS = 1_791_000_000_000  # a fixed exchange clock (Oct 2026)
PATH = "/trade-api/v2/portfolio/orders"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(k: rsa.RSAPrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pss(k: rsa.RSAPrivateKey, message: str) -> str:
    sig = k.sign(message.encode(),
                 padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                 hashes.SHA256())
    return base64.b64encode(sig).decode()


def _headers(k: rsa.RSAPrivateKey, *, ts: int | str = NOW_MS, method: str = "GET", path: str = PATH,
             key_id: str = "key-1", signature: str | None = None) -> dict[str, str]:
    return {KEY_HEADER: key_id, TS_HEADER: str(ts),
            SIG_HEADER: signature if signature is not None else _pss(k, f"{ts}{method}{path}")}


@pytest.fixture
def ring(key: rsa.RSAPrivateKey) -> KeyRing:
    r = KeyRing(clock_ms=lambda: NOW_MS)
    r.register("key-1", _pem(key), "alice")
    return r


def _reason(ring: KeyRing, headers: dict[str, str], path: str = PATH, method: str = "GET") -> str:
    with pytest.raises(AuthError) as e:
        ring.verify(method, path, headers)
    return e.value.reason


def test_correct_signature_is_accepted(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    assert ring.verify("GET", PATH, _headers(key)) == "alice"
    # Within the ±30 s window either way.
    assert ring.verify("GET", PATH, _headers(key, ts=NOW_MS - 29_000)) == "alice"
    assert ring.verify("POST", PATH, _headers(key, ts=NOW_MS + 29_000, method="POST")) == "alice"


def test_websocket_handshake_path(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    assert ring.verify("GET", "/trade-api/ws/v2", _headers(key, path="/trade-api/ws/v2")) == "alice"


def test_signature_by_another_key_is_refused(ring: KeyRing, other_key: rsa.RSAPrivateKey) -> None:
    assert _reason(ring, _headers(other_key)) == "INCORRECT_API_KEY_SIGNATURE"


def test_unknown_key_id_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    assert _reason(ring, _headers(key, key_id="nobody")) == "INVALID_API_KEY"


def test_wrong_path_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    # Signed without the /trade-api/v2 prefix, and signed for another endpoint.
    assert _reason(ring, _headers(key, path="/portfolio/orders")) == "INCORRECT_API_KEY_SIGNATURE"
    assert _reason(ring, _headers(key, path="/trade-api/v2/portfolio/balance")) == "INCORRECT_API_KEY_SIGNATURE"


def test_query_string_in_signed_path_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    headers = _headers(key, path=PATH + "?limit=5")
    assert _reason(ring, headers, path=PATH + "?limit=5") == "INCORRECT_API_KEY_SIGNATURE"


def test_wrong_method_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    assert _reason(ring, _headers(key, method="GET"), method="DELETE") == "INCORRECT_API_KEY_SIGNATURE"
    assert _reason(ring, _headers(key, method="get")) == "INCORRECT_API_KEY_SIGNATURE"


def test_seconds_instead_of_ms_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(AuthError) as e:
        ring.verify("GET", PATH, _headers(key, ts=NOW_MS // 1000))
    assert e.value.reason == "TIMESTAMP_OUT_OF_RANGE"
    assert "milliseconds" in e.value.details


@pytest.mark.parametrize("skew_ms", [31_000, -31_000, 3_600_000])
def test_clock_skew_over_30s_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey, skew_ms: int) -> None:
    assert _reason(ring, _headers(key, ts=NOW_MS + skew_ms)) == "TIMESTAMP_OUT_OF_RANGE"


def test_pkcs1v15_instead_of_pss_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    sig = key.sign(f"{NOW_MS}GET{PATH}".encode(), padding.PKCS1v15(), hashes.SHA256())
    assert _reason(ring, _headers(key, signature=base64.b64encode(sig).decode())) == "INCORRECT_API_KEY_SIGNATURE"


def test_pss_with_max_salt_is_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    sig = key.sign(f"{NOW_MS}GET{PATH}".encode(),
                   padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
                   hashes.SHA256())
    assert _reason(ring, _headers(key, signature=base64.b64encode(sig).decode())) == "INCORRECT_API_KEY_SIGNATURE"


def test_missing_headers_and_garbage_are_refused(ring: KeyRing, key: rsa.RSAPrivateKey) -> None:
    headers = _headers(key)
    del headers[SIG_HEADER]
    assert _reason(ring, headers) == "MISSING_AUTH_HEADERS"
    assert _reason(ring, _headers(key, signature="not base64!")) == "INCORRECT_API_KEY_SIGNATURE"
    assert _reason(ring, _headers(key, ts="soon")) == "INVALID_TIMESTAMP"


def test_error_body_has_kalshis_shape(ring: KeyRing, other_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(AuthError) as e:
        ring.verify("GET", PATH, _headers(other_key))
    body = e.value.body()
    assert body == {"error": {"code": "authentication_error", "message": "authentication_error",
                              "details": "rpc error: code = Unauthenticated desc = INCORRECT_API_KEY_SIGNATURE"}}


def test_verify_signature_directly(key: rsa.RSAPrivateKey) -> None:
    pub = key.public_key()
    msg = f"{NOW_MS}GET{PATH}"
    assert verify_signature(pub, str(NOW_MS), "GET", PATH, _pss(key, msg))
    assert not verify_signature(pub, str(NOW_MS + 1), "GET", PATH, _pss(key, msg))


def test_register_rejects_non_rsa_or_garbage() -> None:
    ring = KeyRing()
    with pytest.raises(ValueError):
        ring.register("k", b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "u")
