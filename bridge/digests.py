"""SHA-256 and HMAC-SHA256 of webhook bodies, computed without giving up the GIL.

CPython's hashlib releases the GIL while it hashes an input of 2,048 bytes or more, so that
other threads can run meanwhile. For a webhook body (3 kB for a typical WooCommerce order) that
costs far more than it saves: hashing takes about 4 µs, but under a burst the request thread then
waits for the GIL behind the other request threads, and each such hand-over costs context
switches in the whole process. Measured with ``bench/webhook_accept.py`` (8 server threads, 16
clients), the one HMAC of a delivery made in one call cost about 30 µs of the server's CPU per
request more than the same HMAC fed in pieces below the threshold.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

# hashlib (HASHLIB_GIL_MINSIZE) and its HMAC release the GIL for an update of 2,048 bytes or more.
_PIECE = 2047


def _feed(hasher: "hashlib._Hash | hmac.HMAC", data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), _PIECE):
        hasher.update(view[start:start + _PIECE])


def sha256_hex(data: bytes) -> str:
    hasher = hashlib.sha256()
    _feed(hasher, data)
    return hasher.hexdigest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) from the key's two padded states, hashed once per key and
    copied per message: what ``hmac.new`` computes, without building its Python object and
    hashing the padded key twice on every delivery."""
    inner_start, outer_start = _padded_states(key)
    inner = inner_start.copy()
    _feed(inner, data)
    outer = outer_start.copy()
    outer.update(inner.digest())
    return outer.digest()


_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=64)  # a few stores' signing secrets, as long as they are in use
def _padded_states(key: bytes) -> "tuple[hashlib._Hash, hashlib._Hash]":
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD)))
