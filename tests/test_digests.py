"""The piecewise digests equal hashlib's own, at every size around the pieces' boundary."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bridge.digests import hmac_sha256, sha256_hex


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 4096, 100_003])
def test_digests_equal_hashlibs(size: int) -> None:
    data = bytes(i * 7 % 251 for i in range(size))
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
    key = "whsec-ünïcode".encode()
    assert hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()
