"""Session establishment transcript (protocol 2), its derived keys, and frame MACs.

A session starts with SPAKE2 (host side A, drive side B; see docs/protocol.md) whose key
``key`` is then bound to everything both sides said:

th        = SHA-256("sealkeep auth 2" 0x00 | role u8 | len(serial) u8 | serial | X | Y | identity)
signature = Ed25519(drive identity key, "sealkeep drive identity" 0x00 | th)
confirm   = HMAC-SHA256(key, "sealkeep drive confirm" / "sealkeep host confirm" 0x00 | th)
K_h2d     = HMAC-SHA256(key, "sealkeep session h2d" 0x00 | th), K_d2h likewise
frame MAC = HMAC-SHA256(K_dir, counter u64 BE | header | body)[:16]
Each direction has its own key and counter, both starting at 0 after AUTH_PROVE succeeds.
"""

import hashlib

from .hmac256 import HMAC256, hmac_sha256

PROTOCOL = 2
ELEMENT_LEN = 32
KEY_LEN = 32
CREDENTIAL_LEN = 32
SIGNATURE_LEN = 64

ROLE_OWNER = 0
ROLE_CUSTODIAN = 1
ROLE_ENROL = 2

# SPAKE2 identities; the drive's is its serial.
HOST_ID = b"sealkeep host"
# The password of an enrol session: public, so such a session authenticates only the drive
# (by its signature) and keeps the claim from a tap on the line.
ENROL_PASSWORD = b"sealkeep enrol"

TRANSCRIPT = b"sealkeep auth 2"
IDENTITY = b"sealkeep drive identity"
DRIVE_CONFIRM = b"sealkeep drive confirm"
HOST_CONFIRM = b"sealkeep host confirm"
SESSION_H2D = b"sealkeep session h2d"
SESSION_D2H = b"sealkeep session d2h"
CLAIM_OWNER = b"sealkeep claim owner"
CLAIM_CUSTODIAN = b"sealkeep claim custodian"


def transcript_hash(role: int, serial: str, x_msg: bytes, y_msg: bytes, identity: bytes) -> bytes:
    raw = serial.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("serial too long")
    h = hashlib.sha256(TRANSCRIPT + b"\x00")
    h.update(bytes([role, len(raw)]))
    h.update(raw)
    h.update(x_msg)
    h.update(y_msg)
    h.update(identity)
    return h.digest()


def identity_message(th: bytes) -> bytes:
    """What the drive signs with its identity key."""
    return IDENTITY + b"\x00" + th


def derive(key: bytes, label: bytes, th: bytes) -> bytes:
    return hmac_sha256(key, label, b"\x00", th)


def mask(secret: "bytes | bytearray", pad: bytes) -> bytes:
    """XOR of two 32-byte values: a claim's credential and its one-time pad."""
    return bytes([secret[i] ^ pad[i] for i in range(len(pad))])


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
