"""Verify Saleor's ``Saleor-Signature`` webhook header (saleor.md §3.2). Pure: no Flask, no network.

Saleor (3.5+) signs every App webhook as a JWS in compact form with a detached, unencoded payload
(RFC 7797): ``<b64url(header)>..<b64url(signature)>``, header
``{"alg": "RS256", "b64": false, "crit": ["b64"], "kid": <RFC 7638 thumbprint>, "typ": "JWT"}``,
signed over ``b64url(header) + "." + raw body``. The public keys are the store's JWKS at
``<origin>/.well-known/jwks.json``. Webhooks created with a ``secretKey`` (never manifest ones)
instead carry the lower-case hex HMAC-SHA256 of the body.

Saleor signs its JWTs (access and app tokens) with the same key and ``kid``, so a JWS is only
accepted in the detached, ``b64: false`` form: an ordinary token signed by the store must not pass
as the signature of an arbitrary body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK, PyJWKSet
from jwt.algorithms import RSAAlgorithm
from jwt.api_jws import PyJWS

from bridge.digests import hmac_sha256
from bridge.errors import SignatureError, StoreConnectionError

ALGORITHM = "RS256"

MISSING = "missing signature"
MALFORMED = "malformed signature"
NOT_RS256 = "not RS256"
UNKNOWN_KEY = "unknown key id"
MISMATCH = "signature does not match the body"

# A 4096-bit RS256 signature is 683 characters and Saleor's header about 150: anything much
# longer is not a Saleor signature and is refused before any decoding.
_MAX_SIGNATURE_LENGTH = 8192
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_HEX = re.compile(r"[0-9a-fA-F]{64}")

# RFC 7638 §3.2: the required members of each key type, hashed in lexicographic order.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                       "OKP": ("crv", "kty", "x"), "oct": ("k", "kty")}


def verify_saleor_signature(body: bytes, signature: str, *, jwks: Mapping | str | None,
                            fetch_jwks: Callable[[], Mapping] | None = None,
                            hmac_secret: str | None = None) -> dict | None:
    """Check ``signature`` (the ``Saleor-Signature`` header) against the raw request ``body``.

    ``jwks`` is the store's cached JWKS (a mapping or its JSON text; None or unusable counts as
    empty). When the key id is not in it, or its key does not verify the body, ``fetch_jwks`` is
    called once and the check retried, because Saleor rotates keys (app-sdk does the same). On
    success after such a refetch the fetched JWKS is returned as a new dict, for the caller to
    store; otherwise None. Errors raised by ``fetch_jwks`` propagate unchanged.

    ``hmac_secret`` enables the legacy form (webhooks created with a ``secretKey``): a signature
    without dots is then compared with the hex HMAC-SHA256 of the body.

    Raises SignatureError with a short reason: "missing signature", "malformed signature",
    "not RS256", "unknown key id" or "signature does not match the body".
    """
    body = bytes(body)
    if not isinstance(signature, str) or not signature.strip():
        raise SignatureError(MISSING)
    signature = signature.strip()
    if len(signature) > _MAX_SIGNATURE_LENGTH:
        raise SignatureError(MALFORMED)
    if "." not in signature:
        _verify_hmac(body, signature, hmac_secret)
        return None

    kid = _checked_header(signature)
    cached = _rs256_keys(jwks)
    if kid in cached and _verifies(signature, body, cached[kid]):
        return None
    reason = MISMATCH if kid in cached else UNKNOWN_KEY
    if fetch_jwks is None:
        raise SignatureError(reason)

    fetched = fetch_jwks()
    fresh = _rs256_keys(fetched)
    if kid not in fresh:
        raise SignatureError(UNKNOWN_KEY)
    if not _verifies(signature, body, fresh[kid]):
        raise SignatureError(MISMATCH)
    return _as_dict(fetched)


def signature_kid(signature: Any) -> str | None:
    """The ``kid`` of a well-formed detached RS256 JWS signature; None for anything else."""
    if not isinstance(signature, str) or not signature.strip() or \
            len(signature.strip()) > _MAX_SIGNATURE_LENGTH:
        return None
    try:
        return _checked_header(signature.strip())
    except SignatureError:
        return None


class JwksRefetchLimiter:
    """How often a webhook may make the bridge fetch a store's JWKS: once per ``interval``.

    ``verify_saleor_signature`` refetches whenever the key id is unknown or its key does not
    verify, so without a limit anyone could make the bridge fetch a store's JWKS on every
    request (a forged signature under a made-up or a real key id costs nothing to send). The
    ``fetcher`` this hands out, in place of the store's own fetch:

    * does not fetch at all when the cached key under the signature's ``kid`` is that very key
      (``kid`` is the key's RFC 7638 thumbprint): a fresh copy is the same key and cannot verify
      a signature it failed, so the answer is "signature does not match the body";
    * otherwise fetches at most once per ``interval`` per store (successful or not). Within the
      interval it answers with the JWKS fetched last when that has the ``kid`` (so a rotated key
      fetched on behalf of one request serves the next), and else raises StoreConnectionError:
      the caller answers 503 and Saleor delivers again later, when a fetch is allowed.

    One instance per process; its state is in memory (each web process fetches on its own).
    """

    def __init__(self, interval: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, Any]] = {}  # store key -> (fetched at, JWKS or None)

    def fetcher(self, key: str, signature: Any, cached_jwks: Any,
                fetch: Callable[[], Mapping], *, kid: str | None = None) -> Callable[[], Mapping]:
        """``kid``: the key id, when the token is not a detached JWS (the Dashboard's JWT)."""
        kid = kid if kid is not None else signature_kid(signature)

        def limited() -> Mapping:
            cached = _rs256_keys(cached_jwks).get(kid) if kid else None
            if cached is not None and _key_thumbprint(cached) == kid:
                raise SignatureError(MISMATCH)
            now = self.clock()
            with self._lock:
                last = self._last.get(key)
                if last is not None and now - last[0] < self.interval:
                    recent = last[1]
                    if recent is not None and kid and kid in _rs256_keys(recent):
                        return _as_dict(recent)
                    raise StoreConnectionError(
                        "the store's JWKS was fetched moments ago and has no key "
                        f"{(kid or '')[:60]!r}; not fetched again yet")
                # Claimed before fetching: concurrent requests do not fetch alongside.
                self._last[key] = (now, last[1] if last is not None else None)
            try:
                fetched = fetch()
            except BaseException:
                with self._lock:
                    self._last[key] = (self.clock(), None)
                raise
            with self._lock:
                self._last[key] = (self.clock(), _copy_or_none(fetched))
            return fetched

        return limited


def _key_thumbprint(key: PyJWK) -> str | None:
    try:
        return thumbprint(RSAAlgorithm.to_jwk(key.key, as_dict=True))
    except Exception:  # noqa: BLE001 - no thumbprint: treated as a key that may be replaced
        return None


def _copy_or_none(jwks: Any) -> dict | None:
    try:
        copied = _as_dict(jwks)
    except (TypeError, ValueError):
        return None
    return copied if isinstance(copied, dict) else None


def jwks_url_for(saleor_api_url: str) -> str:
    """The JWKS URL of the Saleor at ``saleor_api_url``: its origin + ``/.well-known/jwks.json``.

    Like app-sdk's ``new URL(saleorApiUrl).origin``: scheme and host lower-cased, a default port
    dropped, user info, path, query and fragment left out. ValueError for anything but an
    absolute http(s) URL.
    """
    parts = urlsplit(saleor_api_url.strip() if isinstance(saleor_api_url, str) else "")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {saleor_api_url!r}")
    host = parts.hostname  # lower-cased, without IPv6 brackets
    if ":" in host:
        host = f"[{host}]"
    port = parts.port  # ValueError for a port out of range or not a number
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}/.well-known/jwks.json"


def thumbprint(jwk: Mapping | str) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url without padding): Saleor's ``kid``."""
    data = json.loads(jwk) if isinstance(jwk, str) else jwk
    members = _THUMBPRINT_MEMBERS.get(data.get("kty")) if isinstance(data, Mapping) else None
    if members is None:
        raise ValueError("not a JWK of a known key type (RSA, EC, OKP, oct)")
    missing = [m for m in members if not isinstance(data.get(m), str)]
    if missing:
        raise ValueError(f"JWK lacks {', '.join(missing)}")
    canonical = json.dumps({m: data[m] for m in members}, separators=(",", ":"),
                           ensure_ascii=False, sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _verify_hmac(body: bytes, signature: str, secret: str | None) -> None:
    if secret is None or not _HEX.fullmatch(signature):
        raise SignatureError(MALFORMED)
    expected = hmac_sha256(secret.encode("utf-8"), body).hex()
    if not hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("ascii")):
        raise SignatureError(MISMATCH)


def _checked_header(signature: str) -> str:
    """The ``kid`` of a well-formed detached RS256 JWS; SignatureError for anything else.

    Everything here is checked before a key is looked up, so a forged header never makes the
    caller refetch the JWKS.
    """
    segments = signature.split(".")
    if len(segments) != 3 or segments[1] or not _B64URL.fullmatch(segments[0]):
        raise SignatureError(MALFORMED)
    try:
        header = jwt.get_unverified_header(signature)
    except jwt.PyJWTError:
        raise SignatureError(MALFORMED) from None
    # The algorithm is pinned, never taken from the header: "none", HS256 (with the public key as
    # the HMAC secret) and any other choice of the sender's is refused.
    if header.get("alg") != ALGORITHM:
        raise SignatureError(NOT_RS256)
    # Only the detached, unencoded form Saleor sends (see the module docstring).
    if header.get("b64") is not False or header.get("crit") != ["b64"]:
        raise SignatureError(MALFORMED)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or not _B64URL.fullmatch(segments[2]):
        raise SignatureError(MALFORMED)
    return kid


def _rs256_keys(jwks: Any) -> dict[str, PyJWK]:
    """The RS256 signing keys of a JWKS by kid; {} when there is none or it is unusable."""
    if isinstance(jwks, (str, bytes)):
        try:
            jwks = json.loads(jwks)
        except ValueError:
            return {}
    raw = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(raw, list):
        return {}
    # Saleor's entries have "alg": "RS256" from 3.21 and no "alg" before (PyJWK then infers
    # RS256 for an RSA key); keys for anything else can never verify a Saleor signature.
    usable = [k for k in raw if isinstance(k, Mapping) and k.get("kty") == "RSA"
              and k.get("alg", ALGORITHM) == ALGORITHM and k.get("use", "sig") == "sig"
              and isinstance(k.get("kid"), str) and k.get("kid")]
    if not usable:
        return {}
    try:
        key_set = PyJWKSet.from_dict({"keys": [dict(k) for k in usable]})
    except (jwt.PyJWTError, TypeError, ValueError):
        return {}  # PyJWKSet skips broken keys and raises only when none is left
    keys: dict[str, PyJWK] = {}
    for key in key_set:
        keys.setdefault(key.key_id, key)
    return keys


def _verifies(signature: str, body: bytes, key: PyJWK) -> bool:
    try:
        PyJWS().decode(signature, key=key.key, algorithms=[ALGORITHM], detached_payload=body)
    except jwt.InvalidSignatureError:
        return False
    except jwt.PyJWTError:
        raise SignatureError(MALFORMED) from None
    return True


def _as_dict(jwks: Any) -> dict:
    if isinstance(jwks, (str, bytes)):
        return json.loads(jwks)
    # A deep, JSON-shaped copy: the caller stores it, and must not share the fetcher's object.
    return json.loads(json.dumps(dict(jwks)))
