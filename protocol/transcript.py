"""Mutual authentication transcript, proofs, session keys and frame MACs.

transcript = len(serial) u8 | serial (UTF-8) | role u8 | host nonce (32) | drive nonce (32)
proof/key  = HMAC-SHA256(credential, label | 0x00 | transcript)
frame MAC  = HMAC-SHA256(session key, counter u64 BE | header | body)[:16]
Each direction has its own key and counter, both starting at 0 after AUTH_PROVE succeeds.
"""

from .hmac256 import HMAC256, hmac_sha256

NONCE_LEN = 32
CREDENTIAL_LEN = 32

ROLE_OWNER = 0
ROLE_CUSTODIAN = 1

HOST_PROOF = b"sealkeep host proof"
DRIVE_PROOF = b"sealkeep drive proof"
SESSION_H2D = b"sealkeep session h2d"
SESSION_D2H = b"sealkeep session d2h"


def transcript(serial: str, role: int, host_nonce: bytes, drive_nonce: bytes) -> bytes:
    raw = serial.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("serial too long")
    return bytes([len(raw)]) + raw + bytes([role]) + bytes(host_nonce) + bytes(drive_nonce)


def derive(credential: bytes, label: bytes, tr: bytes) -> bytes:
    return hmac_sha256(credential, label, b"\x00", tr)


class SessionMac:
    """The MAC state of one direction of a session."""

    def __init__(self, key: bytes) -> None:
        self.hmac = HMAC256(key)
        self.counter = 0

    def tag(self, signed: "bytes | bytearray | memoryview") -> bytes:
        """MAC for the next frame, advancing the counter."""
        mac = self.hmac.mac(self.counter.to_bytes(8, "big"), signed)[:16]
        self.counter += 1
        return mac

    def peek(self, signed: "bytes | bytearray | memoryview") -> bytes:
        """MAC the next frame should carry, without advancing."""
        return self.hmac.mac(self.counter.to_bytes(8, "big"), signed)[:16]
