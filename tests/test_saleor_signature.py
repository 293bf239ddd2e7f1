from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Callable

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt import api_jws
from jwt.algorithms import RSAAlgorithm

from bridge.errors import SignatureError
from bridge.stores.saleor_signature import jwks_url_for, thumbprint, verify_saleor_signature

BODY = json.dumps({"issuedAt": "2026-08-21T10:15:30.123456+00:00", "version": "3.21.69",
                   "order": {"id": "T3JkZXI6M2E5ZThmMWM=", "number": "1042",
                             "total": {"gross": {"amount": 37.5, "currency": "USD"}},
                             "note": "caf\u00e9"}}).encode()


class Key:
    """An RSA key as Saleor holds it, with its JWKS entry (saleor.md §3.2 "Fake-side signing")."""

    def __init__(self, bits: int = 2048) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        self.kid = thumbprint(jwk)
        jwk.update({"use": "sig", "kid": self.kid, "alg": "RS256"})
        self.jwk = jwk

    def sign(self, body: bytes, kid: str | None = None) -> str:
        # The call Saleor's JWTManager.jws_encode makes.
        return api_jws.encode(body, key=self.private, algorithm="RS256",
                              headers={"kid": kid or self.kid, "crit": ["b64"]},
                              is_payload_detached=True)

    def raw_sign(self, signing_input: bytes) -> str:
        return b64(self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def jwks_of(*keys: Key) -> dict:
    return {"keys": [dict(k.jwk) for k in keys]}


@pytest.fixture(scope="module")
def key() -> Key:
    return Key()


@pytest.fixture(scope="module")
def rotated() -> Key:
    return Key()


class Fetcher:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def rejects(reason: str, call: Callable[[], Any]) -> None:
    with pytest.raises(SignatureError) as info:
        call()
    assert str(info.value) == reason


# --- the normal case ---------------------------------------------------------------------------

def test_signature_as_saleor_makes_it(key: Key) -> None:
    signature = key.sign(BODY)
    header_segment, payload_segment, _ = signature.split(".")
    assert payload_segment == ""
    header = json.loads(base64.urlsafe_b64decode(header_segment + "=="))
    assert header == {"alg": "RS256", "b64": False, "crit": ["b64"], "kid": key.kid, "typ": "JWT"}


def test_verifies_with_cached_jwks_without_fetching(key: Key) -> None:
    fetch = Fetcher(AssertionError("must not fetch"))
    assert verify_saleor_signature(BODY, key.sign(BODY), jwks=jwks_of(key),
                                   fetch_jwks=fetch) is None
    assert fetch.calls == 0


def test_jwks_as_json_text_and_pre_321_form_without_alg(key: Key) -> None:
    jwk = {k: v for k, v in key.jwk.items() if k != "alg"}
    assert verify_saleor_signature(BODY, key.sign(BODY), jwks=json.dumps({"keys": [jwk]})) is None


def test_signing_input_is_the_raw_body(key: Key) -> None:
    # RFC 7797: RSASSA-PKCS1-v1_5 over b64url(header) + "." + the unencoded body bytes.
    header = b64json({"alg": "RS256", "b64": False, "crit": ["b64"], "kid": key.kid})
    signature = f"{header}..{key.raw_sign(header.encode() + b'.' + BODY)}"
    assert verify_saleor_signature(BODY, signature, jwks=jwks_of(key)) is None


def test_surrounding_whitespace_in_the_header_value_is_ignored(key: Key) -> None:
    assert verify_saleor_signature(BODY, f" {key.sign(BODY)}\t", jwks=jwks_of(key)) is None


@pytest.mark.parametrize("index", [0, len(BODY) // 2, len(BODY) - 1])
def test_one_byte_changed_fails(key: Key, index: int) -> None:
    tampered = bytearray(BODY)
    tampered[index] ^= 0x01
    rejects("signature does not match the body",
            lambda: verify_saleor_signature(bytes(tampered), key.sign(BODY), jwks=jwks_of(key)))


def test_re_serialised_json_fails(key: Key) -> None:
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    rejects("signature does not match the body",
            lambda: verify_saleor_signature(reserialised, key.sign(BODY), jwks=jwks_of(key)))


def test_extra_byte_fails(key: Key) -> None:
    rejects("signature does not match the body",
            lambda: verify_saleor_signature(BODY + b"\n", key.sign(BODY), jwks=jwks_of(key)))


# --- key rotation ------------------------------------------------------------------------------

def test_unknown_kid_fetches_once_and_returns_the_new_jwks(key: Key, rotated: Key) -> None:
    fresh = jwks_of(rotated)
    fetch = Fetcher(fresh)
    result = verify_saleor_signature(BODY, rotated.sign(BODY), jwks=jwks_of(key),
                                     fetch_jwks=fetch)
    assert fetch.calls == 1
    assert result == fresh
    assert result is not fresh and result["keys"][0] is not fresh["keys"][0]
    # What the caller stores verifies the next delivery without fetching.
    assert verify_saleor_signature(BODY, rotated.sign(BODY), jwks=result,
                                   fetch_jwks=Fetcher(AssertionError())) is None


@pytest.mark.parametrize("cached", [None, {}, {"keys": []}, "", "not json", {"keys": "x"},
                                    [1, 2], {"keys": [{"kty": "RSA", "kid": "x", "n": "?"}]}])
def test_missing_or_unusable_cache_fetches(key: Key, cached: Any) -> None:
    fetch = Fetcher(jwks_of(key))
    assert verify_saleor_signature(BODY, key.sign(BODY), jwks=cached,
                                   fetch_jwks=fetch) == jwks_of(key)
    assert fetch.calls == 1


def test_fetched_jwks_as_json_text(key: Key) -> None:
    fetch = Fetcher(json.dumps(jwks_of(key)))
    assert verify_saleor_signature(BODY, key.sign(BODY), jwks=None,
                                   fetch_jwks=fetch) == jwks_of(key)


def test_still_unknown_after_fetch(key: Key, rotated: Key) -> None:
    fetch = Fetcher(jwks_of(key))
    rejects("unknown key id", lambda: verify_saleor_signature(
        BODY, rotated.sign(BODY), jwks=jwks_of(key), fetch_jwks=fetch))
    assert fetch.calls == 1


@pytest.mark.parametrize("fetched", [{}, {"keys": []}, "garbage", None, ["x"]])
def test_fetch_returning_nothing_usable(key: Key, fetched: Any) -> None:
    fetch = Fetcher(fetched)
    rejects("unknown key id", lambda: verify_saleor_signature(
        BODY, key.sign(BODY), jwks=None, fetch_jwks=fetch))
    assert fetch.calls == 1


def test_unknown_kid_without_fetcher(key: Key, rotated: Key) -> None:
    rejects("unknown key id",
            lambda: verify_saleor_signature(BODY, rotated.sign(BODY), jwks=jwks_of(key)))
    rejects("unknown key id", lambda: verify_saleor_signature(BODY, key.sign(BODY), jwks=None))


def test_cached_key_that_fails_is_refetched(key: Key, rotated: Key) -> None:
    # The cached entry under this kid holds other key material (a replaced key): refetch.
    stale = dict(rotated.jwk, kid=key.kid)
    fetch = Fetcher(jwks_of(key))
    assert verify_saleor_signature(BODY, key.sign(BODY), jwks={"keys": [stale]},
                                   fetch_jwks=fetch) == jwks_of(key)
    assert fetch.calls == 1


def test_bad_body_refetches_once_then_fails(key: Key) -> None:
    fetch = Fetcher(jwks_of(key))
    rejects("signature does not match the body", lambda: verify_saleor_signature(
        BODY + b" ", key.sign(BODY), jwks=jwks_of(key), fetch_jwks=fetch))
    assert fetch.calls == 1


def test_fetch_errors_propagate(key: Key) -> None:
    fetch = Fetcher(ConnectionError("jwks down"))
    with pytest.raises(ConnectionError, match="jwks down"):
        verify_saleor_signature(BODY, key.sign(BODY), jwks=None, fetch_jwks=fetch)


def test_several_keys_in_the_set(key: Key, rotated: Key) -> None:
    jwks = jwks_of(rotated, key)
    assert verify_saleor_signature(BODY, key.sign(BODY), jwks=jwks) is None
    assert verify_saleor_signature(BODY, rotated.sign(BODY), jwks=jwks) is None


@pytest.mark.parametrize("change", [{"alg": "RS512"}, {"use": "enc"}, {"kty": "EC"}])
def test_keys_for_other_uses_are_ignored(key: Key, change: dict) -> None:
    rejects("unknown key id", lambda: verify_saleor_signature(
        BODY, key.sign(BODY), jwks={"keys": [dict(key.jwk, **change)]}))


# --- forgeries ---------------------------------------------------------------------------------

def test_alg_none_is_rejected_without_fetching(key: Key) -> None:
    header = b64json({"alg": "none", "b64": False, "crit": ["b64"], "kid": key.kid})
    fetch = Fetcher(AssertionError("must not fetch"))
    for signature in (f"{header}..", f"{header}..AAAA"):
        rejects("not RS256", lambda: verify_saleor_signature(BODY, signature, jwks=jwks_of(key),
                                                             fetch_jwks=fetch))
    assert fetch.calls == 0


def test_hs256_with_the_public_key_as_secret_is_rejected(key: Key) -> None:
    # The classic key confusion: HMAC keyed with the public key the verifier holds.
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (pem, json.dumps(key.jwk).encode()):
        header = b64json({"alg": "HS256", "b64": False, "crit": ["b64"], "kid": key.kid})
        mac = hmac.new(secret, header.encode() + b"." + BODY, hashlib.sha256).digest()
        rejects("not RS256", lambda: verify_saleor_signature(
            BODY, f"{header}..{b64(mac)}", jwks=jwks_of(key)))


@pytest.mark.parametrize("alg", ["RS512", "PS256", "ES256", "rs256", None, 256])
def test_other_algorithms_are_rejected(key: Key, alg: Any) -> None:
    header = b64json({"alg": alg, "b64": False, "crit": ["b64"], "kid": key.kid})
    rejects("not RS256", lambda: verify_saleor_signature(
        BODY, f"{header}..{key.raw_sign(header.encode() + b'.' + BODY)}", jwks=jwks_of(key)))


def test_a_store_signed_jwt_is_not_a_signature_of_any_body(key: Key) -> None:
    # Saleor signs its access tokens with the same key and kid: an attached-payload token, or its
    # payload segment cut out, must not authenticate an arbitrary body.
    token = jwt.encode({"sub": "staff", "iss": "https://shop.example.com/graphql/"},
                       key.private, algorithm="RS256", headers={"kid": key.kid})
    header, payload, sig = token.split(".")
    for forged in (token, f"{header}..{sig}"):
        rejects("malformed signature",
                lambda: verify_saleor_signature(BODY, forged, jwks=jwks_of(key)))
    # Even over this very body, the detached form without b64:false is not Saleor's.
    header = b64json({"alg": "RS256", "kid": key.kid})
    signature = key.raw_sign(header.encode() + b"." + b64(BODY).encode())
    rejects("malformed signature", lambda: verify_saleor_signature(
        BODY, f"{header}..{signature}", jwks=jwks_of(key)))


@pytest.mark.parametrize("header", [
    {"alg": "RS256", "b64": False, "kid": "K"},  # b64 without crit
    {"alg": "RS256", "b64": False, "crit": "b64", "kid": "K"},
    {"alg": "RS256", "b64": False, "crit": ["b64", "exp"], "kid": "K"},
    {"alg": "RS256", "b64": "false", "crit": ["b64"], "kid": "K"},
    {"alg": "RS256", "b64": False, "crit": ["b64"]},  # no kid
    {"alg": "RS256", "b64": False, "crit": ["b64"], "kid": ""},
    {"alg": "RS256", "b64": False, "crit": ["b64"], "kid": 7},
])
def test_malformed_headers(key: Key, header: dict) -> None:
    header = {k: (key.kid if v == "K" else v) for k, v in header.items()}
    segment = b64json(header)
    fetch = Fetcher(AssertionError("must not fetch"))
    rejects("malformed signature", lambda: verify_saleor_signature(
        BODY, f"{segment}..{key.raw_sign(segment.encode() + b'.' + BODY)}",
        jwks=jwks_of(key), fetch_jwks=fetch))
    assert fetch.calls == 0


def test_payload_segment_must_be_empty(key: Key) -> None:
    header, _, sig = key.sign(BODY).split(".")
    rejects("malformed signature", lambda: verify_saleor_signature(
        BODY, f"{header}.{b64(BODY)}.{sig}", jwks=jwks_of(key)))


def test_signature_by_another_key_under_the_right_kid(key: Key, rotated: Key) -> None:
    fetch = Fetcher(jwks_of(key))
    rejects("signature does not match the body", lambda: verify_saleor_signature(
        BODY, rotated.sign(BODY, kid=key.kid), jwks=jwks_of(key), fetch_jwks=fetch))
    assert fetch.calls == 1


@pytest.mark.parametrize(("signature", "reason"), [
    ("a.b", "malformed signature"),
    ("a.b.c.d", "malformed signature"),
    ("..", "malformed signature"),
    ("a..", "malformed signature"),
    ("..b", "malformed signature"),
    ("eyJ..", "malformed signature"),
    ("!!!..abc", "malformed signature"),
    ("bm90IGpzb24..abc", "malformed signature"),  # "not json"
    ("W10..abc", "malformed signature"),  # "[]"
    ("e30..abc", "not RS256"),  # "{}": no alg at all
    ("eyJhbGciOiJSUzI1NiJ9.x.", "malformed signature"),
    ("\u00e9..\u00e9", "malformed signature"),
    ("x" * 9000 + "..y", "malformed signature"),
    ("abc.def.ghi", "malformed signature"),
])
def test_garbage_jws(key: Key, signature: str, reason: str) -> None:
    rejects(reason, lambda: verify_saleor_signature(BODY, signature, jwks=jwks_of(key),
                                                    fetch_jwks=Fetcher(AssertionError())))


def test_rs256_header_with_garbage_signature_segment(key: Key) -> None:
    header = key.sign(BODY).split(".")[0]
    for tail in ("", "abc=", "a+b/c", "\u00e9"):
        rejects("malformed signature", lambda: verify_saleor_signature(
            BODY, f"{header}..{tail}", jwks=jwks_of(key), fetch_jwks=Fetcher(AssertionError())))


def test_bad_signature_encoding_is_malformed(key: Key) -> None:
    header, _, sig = key.sign(BODY).split(".")
    rejects("malformed signature", lambda: verify_saleor_signature(
        BODY, f"{header}..{sig[:-1]}", jwks=jwks_of(key)))  # not a whole number of bytes


@pytest.mark.parametrize("signature", ["", "   ", None, b"abc"])
def test_missing_signature(key: Key, signature: Any) -> None:
    rejects("missing signature",
            lambda: verify_saleor_signature(BODY, signature, jwks=jwks_of(key), hmac_secret="s"))


# --- legacy HMAC -------------------------------------------------------------------------------

SECRET = "whsec-\u00fcml\u00e4ut-42"


def legacy(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def test_legacy_hmac_ok(key: Key) -> None:
    assert verify_saleor_signature(BODY, legacy(BODY), jwks=None, hmac_secret=SECRET) is None
    assert verify_saleor_signature(BODY, legacy(BODY).upper(), jwks=None,
                                   hmac_secret=SECRET) is None


@pytest.mark.parametrize("signature", [legacy(BODY + b" "), legacy(BODY, "other"), "0" * 64])
def test_legacy_hmac_mismatch(signature: str) -> None:
    rejects("signature does not match the body",
            lambda: verify_saleor_signature(BODY, signature, jwks=None, hmac_secret=SECRET))


@pytest.mark.parametrize("signature", [
    "sha256=" + legacy(BODY), legacy(BODY)[:-1], legacy(BODY) + "0", "z" * 64,
    base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode(),
    "\u0661" * 64,
])
def test_legacy_hmac_malformed(signature: str) -> None:
    rejects("malformed signature",
            lambda: verify_saleor_signature(BODY, signature, jwks=None, hmac_secret=SECRET))


def test_hmac_signature_without_a_secret_is_refused() -> None:
    rejects("malformed signature",
            lambda: verify_saleor_signature(BODY, legacy(BODY), jwks=None))


def test_jws_still_verified_when_a_secret_is_set(key: Key) -> None:
    assert verify_saleor_signature(BODY, key.sign(BODY), jwks=jwks_of(key),
                                   hmac_secret=SECRET) is None
    rejects("signature does not match the body", lambda: verify_saleor_signature(
        BODY + b"x", key.sign(BODY), jwks=jwks_of(key), hmac_secret=SECRET))


# --- helpers -----------------------------------------------------------------------------------

def test_thumbprint_rfc7638_example() -> None:
    # RFC 7638 §3.1.
    jwk = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
           "n": ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
                 "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
                 "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
                 "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
                 "Cur-kEgU8awapJzKnqDKgw")}
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert thumbprint(json.dumps(jwk)) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("jwk", [{}, {"kty": "RSA", "n": "x"}, {"kty": "XYZ"}, [], "null"])
def test_thumbprint_of_non_keys(jwk: Any) -> None:
    with pytest.raises(ValueError):
        thumbprint(jwk)


@pytest.mark.parametrize(("api_url", "expected"), [
    ("https://shop.example.com/graphql/", "https://shop.example.com/.well-known/jwks.json"),
    ("https://Shop.Example.COM:443/graphql/", "https://shop.example.com/.well-known/jwks.json"),
    ("HTTP://localhost:8000/graphql/", "http://localhost:8000/.well-known/jwks.json"),
    ("http://127.0.0.1:80/graphql/?x=1#y", "http://127.0.0.1/.well-known/jwks.json"),
    ("https://user:pw@shop.example.com:8443/api/graphql/",
     "https://shop.example.com:8443/.well-known/jwks.json"),
    ("http://[::1]:8000/graphql/", "http://[::1]:8000/.well-known/jwks.json"),
    (" https://shop.example.com ", "https://shop.example.com/.well-known/jwks.json"),
])
def test_jwks_url_for(api_url: str, expected: str) -> None:
    assert jwks_url_for(api_url) == expected


@pytest.mark.parametrize("api_url", ["shop.example.com/graphql/", "/graphql/", "",
                                     "ftp://shop.example.com/graphql/", "https:///graphql/",
                                     "https://shop.example.com:99999/graphql/",
                                     "https://shop.example.com:port/", None])
def test_jwks_url_for_rejects_non_urls(api_url: Any) -> None:
    with pytest.raises(ValueError):
        jwks_url_for(api_url)
