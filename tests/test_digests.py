"""The piecewise digests equal hashlib's own, at every size around the pieces' boundary."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bridge.digests import hmac_sha256, sha256_hex


# Keys shorter than SHA-256's 64-byte block, exactly one block, and longer (hashed first).
@pytest.mark.parametrize("key", [b"", b"k", "whsec-ünïcode".encode(), bytes(range(64)),
                                 bytes(range(65)), b"x" * 200])
@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 4096, 100_003])
def test_digests_equal_hashlibs(size: int, key: bytes) -> None:
    data = bytes(i * 7 % 251 for i in range(size))
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
    assert hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()
