"""Ed25519 (RFC 8032) in plain MicroPython: verification for firmware images, signing with
the drive's identity key, and the group arithmetic SPAKE2 (fw/pake.py) needs.

Big integers and extended twisted Edwards coordinates with complete addition formulas, so
any point on the curve (the identity and small-order points included) adds correctly. The
unix port's hashlib has no SHA-512, so a small one is here (64-bit words as big integers;
a signature over a short message hashes one or two blocks).

- verify: strict (S below the group order, A and R canonical encodings of points on the
  curve), cofactorless [S]B = R + [k]A, one combined double-and-add loop (Straus).
- sign, public_key: byte for byte what RFC 8032 (and OpenSSL) computes from a 32-byte seed.
- base_mult: [n]B by a 4-tooth comb over a 1 KB constant table: 64 doublings and 64
  additions whatever n is (the same work for every nonce of a signature).
- scalar_mults: [n]P and [m]P for a variable P from one chain of doublings, which gives
  SPAKE2 its [y]X and the subgroup check [L]X for the price of one multiplication.

The module is imported only while it is needed and dropped afterwards: its constants and
code would otherwise take heap the drive needs for data.
"""

import hashlib

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is only a marker for the compiler

    def const(expr):  # type: ignore[misc]
        return expr


# The field prime p, the order L of the base point, d = -121665/121666 and 2d, sqrt(-1),
# and the base point B = (x, y) with t = x y. (const: the compiler puts them in the code.)
_P = const((1 << 255) - 19)
L = const((1 << 252) + 27742317777372353535851937790883648493)
_D = const(37095705934669439343138083508754565189542113879843219016388785533085940283555)
_D2 = const(16295367250680780974490674513165176452449235426866156013048779062215315747161)
_SQRT_M1 = const(19681161376707505956807079304988542015446066515923890162744021073123829784752)
_BX = const(15112221349535400772501151409588531511454012693041857206046113283949847762202)
_BY = const(46316835694926478169428394003475163141307993866256225615783033603165251855960)
_BT = const(46827403850823179245072216630277197565144205554125654976674165829533817101731)
_M64 = const((1 << 64) - 1)

# SHA-512 round constants, big-endian 64-bit words (read one at a time: a list of 80 big
# integers would take kilobytes of heap).
_K = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)
_H0 = (
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
)


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (64 - n))) & _M64


def _compress(h: list, block: bytes) -> None:
    """One SHA-512 block into the state h (eight 64-bit words), in place."""
    w = [int.from_bytes(block[i : i + 8], "big") for i in range(0, 128, 8)]
    a, b, c, d, e, f, g, hh = h
    for i in range(80):
        if i >= 16:  # the schedule in a ring of 16 words
            w15 = w[(i - 15) & 15]
            w2 = w[(i - 2) & 15]
            s0 = _rotr(w15, 1) ^ _rotr(w15, 8) ^ (w15 >> 7)
            s1 = _rotr(w2, 19) ^ _rotr(w2, 61) ^ (w2 >> 6)
            w[i & 15] = (w[i & 15] + s0 + w[(i - 7) & 15] + s1) & _M64
        t1 = (
            hh
            + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41))
            + ((e & f) ^ (~e & g))
            + int.from_bytes(_K[i * 8 : i * 8 + 8], "big")
            + w[i & 15]
        )
        t2 = (_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))
        hh = g
        g = f
        f = e
        e = (d + t1) & _M64
        d = c
        c = b
        b = a
        a = (t1 + t2) & _M64
    for i, v in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + v) & _M64


def sha512_pure(data: bytes) -> bytes:
    """SHA-512 of data (FIPS 180-4), without hashlib."""
    h = [int.from_bytes(_H0[i : i + 8], "big") for i in range(0, 64, 8)]
    n = len(data)
    full = n - n % 128
    for i in range(0, full, 128):
        _compress(h, data[i : i + 128])
    tail = bytes(data[full:]) + b"\x80"
    tail += bytes((112 - len(tail)) % 128) + (n * 8).to_bytes(16, "big")
    for i in range(0, len(tail), 128):
        _compress(h, tail[i : i + 128])
    return b"".join(v.to_bytes(8, "big") for v in h)


def sha512(data: bytes) -> bytes:
    """SHA-512: hashlib's where the port has it, else the one above."""
    f = getattr(hashlib, "sha512", None)
    if f is not None:
        return f(data).digest()
    return sha512_pure(data)


# -- the curve --------------------------------------------------------------------------
# A point is (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z, coordinates mod p.

IDENTITY = (0, 1, 1, 0)


def add(p: tuple, q: tuple) -> tuple:
    """p + q (add-2008-hwcd-3: complete on this curve)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _double(p: tuple) -> tuple:
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    s = x1 + y1
    e = h - s * s % _P
    g = a - b
    f = c + g
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def negate(p: tuple) -> tuple:
    x, y, z, t = p
    return _P - x, y, z, _P - t


def is_identity(p: tuple) -> bool:
    x, y, z, _ = p
    return x % _P == 0 and (y - z) % _P == 0


def _squares(x: int, n: int) -> int:
    for _ in range(n):
        x = x * x % _P
    return x


def _pow_2_250_1(x: int) -> tuple:
    """(x^(2^250 - 1), x^11): the common part of inversion and square root. This addition
    chain (254 squarings, 11 multiplications) takes 0.3 ms on the unix port, pow() 0.5 to
    0.65 ms."""
    x2 = x * x % _P
    x9 = _squares(x2, 2) * x % _P
    x11 = x9 * x2 % _P
    e5 = x11 * x11 % _P * x9 % _P  # x^(2^5 - 1)
    e10 = _squares(e5, 5) * e5 % _P
    e20 = _squares(e10, 10) * e10 % _P
    e40 = _squares(e20, 20) * e20 % _P
    e50 = _squares(e40, 10) * e10 % _P
    e100 = _squares(e50, 50) * e50 % _P
    e200 = _squares(e100, 100) * e100 % _P
    return _squares(e200, 50) * e50 % _P, x11


def _invert(x: int) -> int:
    e250, x11 = _pow_2_250_1(x)
    return _squares(e250, 5) * x11 % _P  # x^(p - 2)


def decode_point(raw: bytes) -> "tuple | None":
    """The point a 32-byte encoding stands for; None if it is not a canonical encoding of
    a point on the curve."""
    if len(raw) != 32:
        return None
    y = int.from_bytes(raw, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    yy = y * y % _P
    u = (yy - 1) % _P
    v = (_D * yy + 1) % _P
    v3 = v * v % _P * v % _P
    # x = u v^3 (u v^7)^((p - 5) / 8), (p - 5) / 8 = 2^252 - 3
    uv7 = u * v3 % _P * v3 % _P * v % _P
    x = u * v3 % _P * (_squares(_pow_2_250_1(uv7)[0], 2) * uv7 % _P) % _P
    vxx = v * x % _P * x % _P
    if vxx != u:
        if vxx != _P - u:
            return None
        x = x * _SQRT_M1 % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y, 1, x * y % _P


def _encode(p: tuple, z_inverse: int) -> bytes:
    x = p[0] * z_inverse % _P
    y = p[1] * z_inverse % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def encode_point(p: tuple) -> bytes:
    return _encode(p, _invert(p[2]))


def encode_points(p: tuple, q: tuple) -> tuple:
    """(encode_point(p), encode_point(q)) with one inversion (Montgomery's trick)."""
    zi = _invert(p[2] * q[2] % _P)
    return _encode(p, zi * q[2] % _P), _encode(q, zi * p[2] % _P)


# [i0 + 2 i1 + 4 i2 + 8 i3] = i0 B + i1 2^64 B + i2 2^128 B + i3 2^192 B for i0..i3 in {0, 1}:
# affine x, y, 32 bytes little-endian each, the identity first. (Storing y + x, y - x and
# 2dxy instead would save two multiplications per addition, for 512 more bytes of heap.)
_COMB = (
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x1a\xd5\x25\x8f\x60\x2d\x56\xc9\xb2\xa7\x25\x95\x60\xc7\x2c\x69"
    b"\x5c\xdc\xd6\xfd\x31\xe2\xa4\xc0\xfe\x53\x6e\xcd\xd3\x36\x69\x21"
    b"\x58\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66"
    b"\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66\x66"
    b"\x02\xa2\xed\xf4\x8f\x6b\x0b\x3e\xeb\x35\x1a\xd5\x7e\xdb\x78\x00"
    b"\x96\x8a\xa0\xb4\xcf\x60\x4b\xd4\xd5\xf9\x2d\xbf\x88\xbd\x22\x62"
    b"\x13\x53\xe4\x82\x57\xfa\x1e\x8f\x06\x2b\x90\xba\x08\xb6\x10\x54"
    b"\x4f\x7c\x1b\x26\xed\xda\x6b\xdd\x25\xd0\x4e\xea\x42\xbb\x25\x03"
    b"\xa2\xfb\xcc\x61\x67\x06\x70\x1a\xc4\x78\x3a\xff\x32\x62\xdd\x2c"
    b"\xab\x50\x19\x3b\xf2\x9b\x7d\xb8\xfd\x4f\x29\x9c\xa7\x91\xba\x0e"
    b"\x46\x5e\x51\xfe\x1d\xbf\xe5\xe5\x9b\x95\x0d\x67\xf8\xd1\xb5\x5a"
    b"\xa1\x93\x2c\xc3\xde\x0e\x97\x85\x2d\x7f\xea\xab\x3e\x47\x30\x18"
    b"\x24\xe8\xb7\x60\xae\x47\x80\xfc\xe5\x23\xe7\xc2\xc9\x85\xe6\x98"
    b"\xa0\x29\x4e\xe1\x84\x39\x2d\x95\x2c\xf3\x45\x3c\xff\xaf\x27\x4c"
    b"\x6b\xa6\xf5\x4b\x11\xbd\xba\x5b\x9e\xc4\xa4\x51\x1e\xbe\xd0\x90"
    b"\x3a\x9c\xc2\x26\xb6\x1e\xf1\x95\x7d\xc8\x6d\x52\xe6\x99\x2c\x5f"
    b"\x9a\x96\x0c\x68\x29\xfd\xe2\xfb\xe6\xbc\xec\x31\x08\xec\xe6\xb0"
    b"\x53\x60\xc3\x8c\xbe\xc1\xb3\x8a\x8f\xe4\x88\x2b\x55\xe5\x64\x6e"
    b"\x9b\xd0\xaf\x7b\x64\x2a\x35\x25\x10\x52\xc5\x9e\x58\x11\x39\x36"
    b"\x45\x51\xb8\x39\x93\xfc\x9d\x6a\xbe\x58\xcb\xa4\x0f\x51\x3c\x38"
    b"\x05\xca\xab\x43\x63\x0e\xf3\x8b\x41\xa6\xf8\x9b\x53\x70\x80\x53"
    b"\x86\x5e\x8f\xe3\xc3\x0d\x18\xc8\x4b\x34\x1f\xd8\x1d\xbc\xf2\x6d"
    b"\x34\x3a\xbe\xdf\xd9\xf6\xf3\x89\xa1\xe1\x94\x9f\x5d\x4c\x5d\xe9"
    b"\xa1\x49\x92\xef\x0e\x53\x81\x89\x58\x87\xa6\x37\xf1\xdd\x62\x60"
    b"\x63\x5a\x9d\x1b\x8c\xc6\x7d\x52\xea\x70\x09\x6a\xe1\x32\xf3\x73"
    b"\x21\x1f\x07\x7b\x7c\x9b\x49\xd8\xc0\xf3\x25\x72\x6f\x9d\xed\x31"
    b"\x67\x36\x36\x54\x40\x92\x71\xe6\x11\x28\x11\xad\x93\x32\x85\x7b"
    b"\x3e\xb7\x3b\x49\x13\x1c\x07\xb0\x2e\x93\xaa\xfd\xfd\x28\x47\x3d"
    b"\x8d\xd2\xda\xc7\x44\xd6\x7a\xdb\x26\x7d\x1d\xb8\xe1\xde\x9d\x7a"
    b"\x7d\x17\x7e\x1c\x37\x04\x8d\x2d\x7c\x5e\x18\x38\x1e\xaf\xc7\x1b"
    b"\x33\x48\x31\x00\x59\xf6\xf2\xca\x0f\x27\x1b\x63\x12\x7e\x02\x1d"
    b"\x49\xc0\x5d\x79\x87\xef\x5e\x7a\x2f\x1f\x66\x55\xd8\x09\xd9\x61"
    b"\x38\x68\xb0\x07\xa3\xfc\xcc\x85\x10\x7f\x4c\x65\x65\xb3\xfa\xfa"
    b"\xa5\x53\x6f\xdb\x74\x4c\x56\x46\x03\xe2\xd5\x7a\x29\x1c\xc6\x02"
    b"\xbc\x59\xf2\x04\x75\x63\xc0\x84\x2f\x60\x1c\x67\x76\xfd\x63\x86"
    b"\xf3\xfa\xbf\xdc\xd2\x2d\x90\x91\xbd\x33\xa9\xe5\x66\x0c\xda\x42"
    b"\x27\xca\xf4\x66\xc2\xec\x92\x14\x57\x06\x63\xd0\x4d\x15\x06\xeb"
    b"\x69\x58\x4f\x77\xc5\x8b\xc7\xf0\x8e\xed\x64\xa0\xb3\x3c\x66\x71"
    b"\xc6\x2d\xda\x0a\x0d\xfe\x70\x27\x64\xf8\x27\xfa\xf6\x5f\x30\xa5"
    b"\x0d\x6c\xda\xf2\x62\x5e\x78\x47\xd3\x66\x00\x1c\xfd\x56\x1f\x5d"
    b"\x3f\x6f\xf4\x4c\xd8\xfd\x0e\x27\xc9\x5c\x2b\xbc\xc0\xa4\xe7\x23"
    b"\x29\x02\x9f\x31\xd6\xe9\xd7\x96\xf4\xe0\x5e\x0b\x0e\x13\xee\x3c"
    b"\x09\xed\xf2\x3d\x76\x91\xc3\xa4\x97\xae\xd4\x87\xd0\x5d\xf6\x18"
    b"\x47\x1f\x1d\x67\xf2\xcf\x63\xa0\x91\x27\xf8\x93\x45\x75\x23\x3f"
    b"\xd1\xf1\xad\x23\xdd\x64\x93\x96\x41\x70\x7f\xf7\xf5\xa9\x89\xa2"
    b"\x34\xb0\x8d\x1b\xae\x19\x15\x49\x58\x23\x6d\x87\x15\x4f\x81\x76"
    b"\xfb\x23\xb5\xea\xcf\xac\x54\x8d\x4e\x42\x2f\xeb\x0f\x63\xdb\x68"
    b"\x37\xa8\xcf\x8b\xab\xf5\xa4\x6e\x96\x2a\xb2\xd6\xbe\x9e\xbd\x0d"
    b"\xb4\x42\xa9\xcf\x01\x83\x8a\x17\x47\x76\xc4\xc6\x83\x04\x95\x0b"
    b"\xfc\x11\xc9\x62\xb8\x0c\x76\x84\xd9\xb9\x37\xfa\xfc\x7c\xc2\x6d"
    b"\x58\x3e\xb3\x04\xbb\x8c\x8f\x48\xbc\x91\x27\xcc\xf9\xb7\x22\x19"
    b"\x83\x2e\x09\xb5\x72\xd9\x54\x1c\x4d\xa1\xea\x0b\xf1\xc6\x08\x72"
    b"\x46\x87\x7a\x6e\x80\x56\x0a\x8a\xc0\xdd\x11\x6b\xd6\xdd\x47\xdf"
    b"\x10\xd9\xd8\xea\x7c\xb0\x8f\x03\x00\x2e\xc1\x8f\x44\xa8\xd3\x30"
    b"\x06\x89\xa2\xf9\x34\xad\xdc\x03\x85\xed\x51\xa7\x82\x9c\xe7\x5d"
    b"\x52\x93\x0c\x32\x9a\x5b\xe1\xaa\xca\xb8\x02\x6d\x3a\xd4\xb1\x3a"
    b"\xf0\x5f\xbe\xb5\x0d\x10\x6b\x38\x32\xac\x76\x80\xbd\xca\x94\x71"
    b"\x7a\xf2\xc9\x35\x2a\xde\x9f\x42\x49\x18\x01\xab\xbc\xef\x7c\x64"
    b"\x3f\x58\x3d\x92\x59\xdb\x13\xdb\x58\x6e\x0a\xe0\xb7\x91\x4a\x08"
    b"\x20\xd6\x2e\x3c\x45\xc9\x8b\x17\x79\xe7\xc7\x90\x99\x3a\x18\x25"
)


def base_mult(n: int) -> tuple:
    """[n]B for 0 <= n < 2^256. Bit i of each 64-bit quarter of n picks one of the 16 table
    points; the identity is added when all four bits are 0, so the work does not depend on
    n (a signature's nonce goes through here)."""
    raw = n.to_bytes(32, "little")
    comb = _COMB
    q = IDENTITY
    for i in range(63, -1, -1):
        q = _double(q)
        at = i >> 3
        shift = i & 7
        o = 64 * (
            (raw[at] >> shift & 1)
            | (raw[at + 8] >> shift & 1) << 1
            | (raw[at + 16] >> shift & 1) << 2
            | (raw[at + 24] >> shift & 1) << 3
        )
        x2 = int.from_bytes(comb[o : o + 32], "little")
        y2 = int.from_bytes(comb[o + 32 : o + 64], "little")
        # Mixed addition (z2 = 1): madd-2008-hwcd-3, complete like add().
        x1, y1, z1, t1 = q
        a = (y1 - x1) * (y2 - x2) % _P
        b = (y1 + x1) * (y2 + x2) % _P
        c = t1 * _D2 % _P * x2 % _P * y2 % _P
        d = 2 * z1
        e = b - a
        f = d - c
        g = d + c
        h = b + a
        q = e * f % _P, g * h % _P, f * g % _P, e * h % _P
    return q


def scalar_mults(point: tuple, n: int, m: int) -> tuple:
    """([n]point, [m]point) for n, m >= 0 from one chain of doublings of point: right to
    left, in signed binary digits (NAF), so about one addition per three bits of each."""
    qn = qm = IDENTITY
    while True:
        if n & 1:
            if n & 2:  # digit -1, carried into the bits above
                qn = add(qn, negate(point))
                n += 1
            else:
                qn = add(qn, point)
        if m & 1:
            if m & 2:
                qm = add(qm, negate(point))
                m += 1
            else:
                qm = add(qm, point)
        n >>= 1
        m >>= 1
        if not (n or m):
            return qn, qm
        point = _double(point)


# -- signatures -------------------------------------------------------------------------


def _secret_scalar(digest: bytes) -> int:
    """The clamped scalar of a seed's SHA-512 (RFC 8032 5.1.5)."""
    a = int.from_bytes(digest[:32], "little")
    return a & ((1 << 254) - 8) | 1 << 254


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of a 32-byte Ed25519 seed (private key)."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return encode_point(base_mult(_secret_scalar(sha512(bytes(seed)))))


def sign(seed: bytes, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of message with the 32-byte seed (RFC 8032 5.1.6).
    The public key is derived from the seed every time, never taken from storage: a wrong
    one would give two signatures of a message the same R and reveal the key."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    message = bytes(message)
    digest = sha512(bytes(seed))
    a = _secret_scalar(digest)
    r = int.from_bytes(sha512(digest[32:] + message), "little") % L
    public, big_r = encode_points(base_mult(a), base_mult(r))
    k = int.from_bytes(sha512(big_r + public + message), "little") % L
    return big_r + ((r + k * a) % L).to_bytes(32, "little")


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether signature is a valid Ed25519 signature of message under the 32-byte public
    key. Never raises for malformed input: anything wrong is False."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = decode_point(bytes(public))
    if a is None:
        return False
    r = bytes(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if s >= L:  # non-canonical S: the malleability RFC 8032 forbids
        return False
    if decode_point(r) is None:
        return False
    k = int.from_bytes(sha512(r + bytes(public) + bytes(message)), "little") % L
    # [S]B + [k](-A), both scalars in one pass from the top bit down.
    b = (_BX, _BY, 1, _BT)
    na = negate(a)
    both = add(b, na)
    q = IDENTITY
    for i in range(252, -1, -1):  # s, k < L < 2^253
        q = _double(q)
        bit = ((s >> i) & 1) | ((k >> i) & 1) << 1
        if bit == 1:
            q = add(q, b)
        elif bit == 2:
            q = add(q, na)
        elif bit == 3:
            q = add(q, both)
    return encode_point(q) == r
