"""SPAKE2, side B (the drive's), byte for byte as the `spake2` package 0.9 computes it with
ParamsEd25519, asymmetric, idA = b"sealkeep host" (docs/protocol.md, "Session").

The drive keeps no password, only its "material" (computed once, at claim):
SHA-256(pw) | encode(w M) | encode(w N), w the package's password scalar. With it, side B is

    Y   = [y]B + wN                       y random in [0, L)
    K   = [y](X - wM)
    key = SHA-256(SHA-256(pw) | SHA-256(idA) | SHA-256(idB) | X | Y | K)

An X is refused (ValueError) unless it is the canonical encoding of a point of the
prime-order subgroup other than the identity, and differs from Y (a reflected message).
The package itself lets through non-canonical encodings (y >= p, or x = 0 with the sign
bit) of points it accepts; this side does not: an honest side A never sends them.

Cost: one comb multiplication for [y]B, and one chain of doublings of X - wM for both
[y](X - wM) and the subgroup check [L](X - wM) = [L]X (wM is in the subgroup).
"""

import hashlib
import os

from fw import ed25519
from protocol.hmac256 import HMAC256

# encode(M), encode(N): the package's arbitrary elements for the seeds b"M" and b"N".
M = (
    b"\x15\xcf\xd1\x8e\x38\x59\x52\x98\x2b\x6a\x8f\x8c\x78\x54\x96\x3b"
    b"\x58\xe3\x43\x88\xc8\xe6\xda\xe8\x91\xdb\x75\x64\x81\xa0\x23\x12"
)
N = (
    b"\xf0\x4f\x2e\x7e\xb7\x34\xb2\xa8\xf8\xb4\x72\xea\xf9\xc3\xc6\x32"
    b"\x57\x6a\xc6\x4a\xea\x65\x0b\x49\x6a\x8a\x20\xff\x00\xe5\x83\xc3"
)

# material(b"sealkeep enrol"): an enrol session's password is public, and a blank drive
# should not spend two scalar multiplications on it every time.
ENROL_MATERIAL = (
    b"\xe6\x84\x94\x97\xa0\xfb\x8b\x26\x58\x63\xac\x6f\x12\xe6\xb4\xc7"
    b"\x5b\x1b\xde\xa6\xd8\xd9\xe3\x5b\x40\x51\xa0\xd7\x8b\x83\x06\x7f"
    b"\x3e\x53\x34\x2a\xad\x19\xbe\xef\xd0\x16\x2e\x2a\x38\xa7\xd4\xa2"
    b"\x47\xb2\xed\xa9\xfe\x6e\xc4\x30\xab\x84\x62\x5d\x2c\x64\x07\x10"
    b"\x81\x36\x52\x91\x46\xd3\xde\x45\x45\x42\xa8\xac\xa4\xaf\x3b\x3c"
    b"\x16\x31\x59\x07\xf0\xa5\x79\xed\x19\xc5\x74\x30\x8f\x30\xf3\x34"
)

# SHA-256(idA), idA = b"sealkeep host": the same in every session.
_ID_A_DIGEST = (
    b"\x51\xc3\x4a\x8f\x98\xa2\x06\x6d\x4e\xd4\x2e\xae\x4d\x59\x80\xb0"
    b"\x59\x82\x11\xd8\x3b\x15\x02\x93\x54\x91\xa5\x48\x8d\xda\x19\xb7"
)


def password_scalar(pw: bytes) -> int:
    """The package's password_to_scalar: HKDF-SHA256 (empty salt, info b"SPAKE2 pw") to
    48 bytes, big-endian, mod L (16 bytes more than L needs, so the bias is negligible)."""
    prk = HMAC256(b"").mac(pw)  # an empty salt is HashLen zero bytes: the same HMAC key
    expand = HMAC256(prk)
    t1 = expand.mac(b"SPAKE2 pw\x01")
    t2 = expand.mac(t1, b"SPAKE2 pw\x02")
    return int.from_bytes(t1 + t2[:16], "big") % ed25519.L


def _stored_point(raw: bytes) -> tuple:
    """A point of the constants or of the material: damaged if it does not decode."""
    point = ed25519.decode_point(raw)
    if point is None:
        raise RuntimeError("damaged SPAKE2 material")
    return point


def material(pw: bytes) -> bytes:
    """SHA-256(pw) | encode(w M) | encode(w N): all that side B needs of a password."""
    pw = bytes(pw)
    w = password_scalar(pw)
    m = ed25519.scalar_mults(_stored_point(M), w, 0)[0]
    n = ed25519.scalar_mults(_stored_point(N), w, 0)[0]
    return hashlib.sha256(pw).digest() + ed25519.encode_point(m) + ed25519.encode_point(n)


def respond(material: bytes, x_msg: bytes, id_b: bytes) -> tuple:
    """(Y, key) for side A's message X (32 bytes each, no side byte). ValueError if X is
    not acceptable; RuntimeError if the material is damaged."""
    x_msg = bytes(x_msg)
    x_point = ed25519.decode_point(x_msg)
    if x_point is None:
        raise ValueError("X is not the canonical encoding of a curve point")
    if ed25519.is_identity(x_point):
        raise ValueError("X is the identity")
    if len(material) != 96:
        raise RuntimeError("damaged SPAKE2 material")
    w_m = _stored_point(material[32:64])
    w_n = _stored_point(material[64:96])
    # As the package does: 64 random bytes mod L, uniform but for a bias below 2^-250.
    y = int.from_bytes(os.urandom(64), "big") % ed25519.L
    k_point, l_point = ed25519.scalar_mults(ed25519.add(x_point, ed25519.negate(w_m)), y, ed25519.L)
    if not ed25519.is_identity(l_point):
        raise ValueError("X is not in the prime-order subgroup")
    y_point = ed25519.add(ed25519.base_mult(y), w_n)
    y_msg, k_msg = ed25519.encode_points(y_point, k_point)
    if x_msg == y_msg:
        raise ValueError("X is a reflection of Y")
    h = hashlib.sha256(material[:32])
    h.update(_ID_A_DIGEST)
    h.update(hashlib.sha256(bytes(id_b)).digest())
    h.update(x_msg)
    h.update(y_msg)
    h.update(k_msg)
    return y_msg, h.digest()
