"""HMAC-SHA256 (RFC 2104) on hashlib alone: MicroPython has no hmac module."""

import hashlib

BLOCK = 64


class HMAC256:
    """A keyed MAC; the pads are computed once per key, then ``mac(*parts)`` per message."""

    def __init__(self, key: bytes) -> None:
        if len(key) > BLOCK:
            key = hashlib.sha256(key).digest()
        key = key + bytes(BLOCK - len(key))
        self.ipad = bytes(b ^ 0x36 for b in key)
        self.opad = bytes(b ^ 0x5C for b in key)

    def mac(self, *parts: "bytes | bytearray | memoryview") -> bytes:
        inner = hashlib.sha256(self.ipad)
        for part in parts:
            inner.update(part)
        outer = hashlib.sha256(self.opad)
        outer.update(inner.digest())
        return outer.digest()


def hmac_sha256(key: bytes, *parts: "bytes | bytearray | memoryview") -> bytes:
    return HMAC256(key).mac(*parts)


def equal(a: "bytes | memoryview", b: "bytes | memoryview") -> bool:
    """Compare without stopping at the first difference."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
