"""The drive's SPAKE2 side B (``device/fw/pake.py``) under CPython and the unix port.

The reference is the ``spake2`` package (side A, ``SPAKE2_A``, and its group operations):
the drive's key must be what side A computes from the drive's Y, for several passwords and
serials, and differ when the passwords differ; its material, password scalar and constants
must be the package's; and every X the package refuses (off the curve, small order, a
torsion component, the identity, a reflection) must be refused with ValueError, as well as
non-canonical encodings, which the package lets through. The host's side
(``sealkeep.pake``) is checked against the same reference. Then the heap: respond and sign
in a 96 KiB heap, precompiled as on a drive.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sealkeep.pake import HOST_ID, HostPake, PakeError, drive_material, drive_respond
from spake2 import SPAKE2_A, SPAKE2_B
from spake2 import ed25519_basic as basic
from spake2.ed25519_group import Ed25519Group
from spake2.parameters.ed25519 import ParamsEd25519

REPO = Path(__file__).resolve().parents[2]
for root in (REPO / "device", REPO):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

from fw import ed25519, pake  # noqa: E402

SEED = 0x5BA4E2
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493

PASSWORDS = [b"", b"sealkeep enrol", b"correct horse", bytes(range(32)), b"\xff" * 32, b"p" * 200]
SERIALS = [b"SK-0001", b"SK-BENCH0001", b"", "drive-\u00e9".encode()]


def encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y % P | (x % P & 1) << 255).to_bytes(32, "little")


def off_curve_encoding() -> bytes:
    """The smallest y whose x^2 = (y^2 - 1) / (d y^2 + 1) has no square root."""
    d = -121665 * pow(121666, P - 2, P) % P
    y = 2
    while True:
        x2 = (y * y - 1) * pow(d * y * y + 1, P - 2, P) % P
        if x2 and pow(x2, (P - 1) // 2, P) != 1:
            return y.to_bytes(32, "little")
        y += 1


def torsion_points() -> list[tuple[int, ...]]:
    """The 8 points of order dividing 8 (extended coordinates), [k]T for k = 0..7 with T of
    order 8: T = [L]Q for a curve point Q with a full torsion component."""
    y = 2
    while True:
        try:
            q = basic.xform_affine_to_extended(basic.decodepoint(y.to_bytes(32, "little")))
        except basic.NotOnCurve:
            y += 1
            continue
        t = basic.scalarmult_element_safe_slow(q, L)
        if not basic.is_extended_zero(basic.scalarmult_element_safe_slow(t, 4)):
            return [basic.scalarmult_element_safe_slow(t, k) for k in range(8)]
        y += 1


def affine(point: tuple[int, ...]) -> tuple[int, int]:
    x, y = basic.xform_extended_to_affine(point)
    return x, y


def bad_x_cases() -> list[tuple[str, bytes]]:
    """X values a drive must refuse."""
    torsion = torsion_points()
    good = ParamsEd25519.group.Base.scalarmult(123456789).XYTZ
    cases = [(f"torsion point [{k}]T8", encode(affine(t))) for k, t in enumerate(torsion)]
    cases[0] = ("the identity", cases[0][1])
    for k in (1, 2, 4):  # order 8, 4, 2 components on a subgroup point
        mixed = basic.add_elements(good, torsion[k])
        cases.append((f"subgroup point + [{k}]T8", encode(affine(mixed))))
    identity = (1).to_bytes(32, "little")
    cases += [
        ("off the curve", off_curve_encoding()),
        ("identity, y = p + 1", (P + 1).to_bytes(32, "little")),
        ("identity with the sign bit", (1 | 1 << 255).to_bytes(32, "little")),
        ("order 2, y = p - 1 with the sign bit", (P - 1 | 1 << 255).to_bytes(32, "little")),
        ("order 4, y = p (0 + p)", P.to_bytes(32, "little")),
        ("y = 2^255 - 1", (2**255 - 1).to_bytes(32, "little")),
        ("31 bytes", identity[:31]),
        ("33 bytes", bytes(33)),
    ]
    return cases


BAD_X = bad_x_cases()
NON_CANONICAL = {"identity, y = p + 1", "identity with the sign bit", "order 4, y = p (0 + p)"}


def host_exchanges(rng: random.Random, count: int) -> list[tuple[bytes, bytes, Any, bytes]]:
    """(password, serial, side A, X) for passwords and serials in turn."""
    out = []
    for n in range(count):
        pw = PASSWORDS[n % len(PASSWORDS)] if n < len(PASSWORDS) else rng.randbytes(n % 40)
        serial = SERIALS[n % len(SERIALS)]
        side_a = SPAKE2_A(pw, idA=HOST_ID, idB=serial)
        out.append((pw, serial, side_a, side_a.start()[1:]))
    return out


class FixedRandom:
    """Stands in for the os module in pake: urandom gives these bytes (a reflection test)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def urandom(self, n: int) -> bytes:
        return self.raw[:n]


def y_for(raw: bytes, material: bytes) -> bytes:
    """The Y a drive sends when its urandom(64) gives raw."""
    y = int.from_bytes(raw, "big") % L
    w_n = ParamsEd25519.group.bytes_to_element(material[64:96])
    return bytes(ParamsEd25519.group.Base.scalarmult(y).add(w_n).to_bytes())


# -- CPython -------------------------------------------------------------------------------


def test_constants_are_the_packages() -> None:
    assert pake.M == ParamsEd25519.M.to_bytes()
    assert pake.N == ParamsEd25519.N.to_bytes()
    assert pake.ENROL_MATERIAL == drive_material(b"sealkeep enrol")
    assert pake.ENROL_MATERIAL == pake.material(b"sealkeep enrol")
    assert hashlib.sha256(HOST_ID).digest() == pake._ID_A_DIGEST


@pytest.mark.parametrize("pw", PASSWORDS)
def test_password_scalar_and_material(pw: bytes) -> None:
    assert pake.password_scalar(pw) == Ed25519Group.password_to_scalar(pw)
    assert pake.material(pw) == drive_material(pw)


def test_group_helpers_against_the_package() -> None:
    rng = random.Random(SEED)
    base = ParamsEd25519.group.Base
    for n in [0, 1, 2, 63, 2**64, L - 1, L, L + 1, 2**255 - 1, 2**256 - 1] + [
        rng.randrange(2**256) for _ in range(20)
    ]:
        want = basic.encodepoint(affine(basic.scalarmult_element_safe_slow(base.XYTZ, n)))
        assert ed25519.encode_point(ed25519.base_mult(n)) == want, n
    torsion = torsion_points()
    for k in range(12):
        point = basic.add_elements(base.scalarmult(rng.randrange(L)).XYTZ, torsion[k % 8])
        raw = encode(affine(point))
        decoded = ed25519.decode_point(raw)
        assert decoded is not None and ed25519.encode_point(decoded) == raw
        n, m = rng.randrange(2**256), rng.choice([0, 1, L, rng.randrange(2**253)])
        got_n, got_m = ed25519.scalar_mults(decoded, n, m)
        for got, s in ((got_n, n), (got_m, m)):
            want = basic.encodepoint(affine(basic.scalarmult_element_safe_slow(point, s)))
            assert ed25519.encode_point(got) == want
        assert ed25519.encode_points(got_n, got_m) == (
            ed25519.encode_point(got_n),
            ed25519.encode_point(got_m),
        )
        assert ed25519.is_identity(ed25519.scalar_mults(decoded, 0, L)[1]) == (k % 8 == 0)


def test_respond_agrees_with_side_a() -> None:
    for pw, serial, side_a, x_msg in host_exchanges(random.Random(SEED), 16):
        y_msg, key = pake.respond(pake.material(pw), x_msg, serial)
        assert len(y_msg) == 32 and len(key) == 32
        assert side_a.finish(b"B" + y_msg) == key, (pw, serial)


def test_host_pake_agrees_with_side_b() -> None:
    """HostPake against the package's side B and against the firmware's."""
    for pw in PASSWORDS[:3]:
        host = HostPake(pw, b"SK-0001")
        side_b = SPAKE2_B(pw, idA=HOST_ID, idB=b"SK-0001")
        y_msg = side_b.start()[1:]
        assert host.finish(y_msg) == side_b.finish(b"A" + host.message)
        host = HostPake(pw, b"SK-0001")
        y_msg, key = pake.respond(pake.material(pw), host.message, b"SK-0001")
        assert host.finish(y_msg) == key
        host = HostPake(pw, b"SK-0001")
        y_msg, key = drive_respond(drive_material(pw), host.message, b"SK-0001")
        assert host.finish(y_msg) == key


def test_wrong_password_or_serial_gives_another_key() -> None:
    side_a = SPAKE2_A(b"right", idA=HOST_ID, idB=b"SK-0001")
    x_msg = side_a.start()[1:]
    y_msg, key = pake.respond(pake.material(b"wrong"), x_msg, b"SK-0001")
    assert side_a.finish(b"B" + y_msg) != key
    host = HostPake(b"right", b"SK-0001")
    y_msg, key = pake.respond(pake.material(b"right"), host.message, b"SK-0002")
    assert host.finish(y_msg) != key
    host = HostPake(b"right", b"SK-0001")
    y_msg, key = drive_respond(drive_material(b"wrong"), host.message, b"SK-0001")
    assert host.finish(y_msg) != key


def test_every_y_is_fresh() -> None:
    x_msg = HostPake(b"pw", b"S").message
    answers = {pake.respond(pake.ENROL_MATERIAL, x_msg, b"S") for _ in range(4)}
    assert len(answers) == 4


def test_the_package_refuses_every_canonical_bad_x() -> None:
    """The firmware is as strict as the package (and stricter only on encodings)."""
    for what, x_msg in BAD_X:
        if what in NON_CANONICAL or len(x_msg) != 32:
            continue
        with pytest.raises((ValueError, basic.NotOnCurve)):
            Ed25519Group.bytes_to_element(x_msg)


@pytest.mark.parametrize("what,x_msg", BAD_X, ids=[c[0] for c in BAD_X])
def test_bad_x_is_refused(what: str, x_msg: bytes) -> None:
    with pytest.raises(ValueError):
        pake.respond(pake.ENROL_MATERIAL, x_msg, b"SK-0001")
    with pytest.raises(ValueError):
        drive_respond(pake.ENROL_MATERIAL, x_msg, b"SK-0001")
    host = HostPake(b"sealkeep enrol", b"SK-0001")
    with pytest.raises(PakeError):
        host.finish(x_msg)


def test_reflection_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = bytes(range(64))
    monkeypatch.setattr(pake, "os", FixedRandom(raw))
    reflected = y_for(raw, pake.ENROL_MATERIAL)
    with pytest.raises(ValueError, match="reflection"):
        pake.respond(pake.ENROL_MATERIAL, reflected, b"SK-0001")
    host = HostPake(b"sealkeep enrol", b"SK-0001")
    with pytest.raises(PakeError, match="our own X"):
        host.finish(host.message)


def test_host_pake_finishes_once() -> None:
    host = HostPake(b"pw", b"S")
    y_msg, _ = drive_respond(drive_material(b"pw"), host.message, b"S")
    host.finish(y_msg)
    with pytest.raises(PakeError):
        host.finish(y_msg)


def test_damaged_material_is_not_blamed_on_x() -> None:
    x_msg = HostPake(b"pw", b"S").message
    with pytest.raises(RuntimeError):
        pake.respond(pake.ENROL_MATERIAL[:95], x_msg, b"S")
    with pytest.raises(RuntimeError):
        pake.respond(pake.ENROL_MATERIAL[:32] + off_curve_encoding() * 2, x_msg, b"S")


# -- the unix port -------------------------------------------------------------------------

MP_SCRIPT = """
import sys
from fw import pake

class FixedRandom:
    def __init__(self, raw):
        self.raw = raw
    def urandom(self, n):
        return self.raw[:n]

real_os = pake.os
out = []
with open(sys.argv[1]) as f:
    for line in f:
        kind, *args = line.split()
        args = [bytes.fromhex(a) if a != "-" else b"" for a in args]
        if kind == "m":
            out.append(pake.material(args[0]).hex())
        elif kind == "w":
            out.append("%x" % pake.password_scalar(args[0]))
        elif kind == "e":
            out.append(pake.ENROL_MATERIAL.hex() + " " + pake.M.hex() + " " + pake.N.hex())
        else:  # r: respond, f: respond with fixed randomness
            pake.os = FixedRandom(args[3]) if kind == "f" else real_os
            try:
                y, key = pake.respond(args[0], args[1], args[2])
                out.append(y.hex() + " " + key.hex())
            except ValueError as exc:
                out.append("ValueError")
print("\\n".join(out))
"""


def hexes(*values: bytes) -> str:
    return " ".join(v.hex() or "-" for v in values)


def test_unix_port_answers_like_the_package(
    tmp_path: Path, run_micropython: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    rng = random.Random(SEED + 1)
    exchanges = host_exchanges(rng, 10)
    wrong = SPAKE2_A(b"right", idA=HOST_ID, idB=b"SK-0001")
    wrong_x = wrong.start()[1:]
    raw = rng.randbytes(64)
    reflected = y_for(raw, pake.ENROL_MATERIAL)
    lines = ["e"]
    lines += [f"m {hexes(pw)}" for pw in PASSWORDS]
    lines += [f"w {hexes(pw)}" for pw in PASSWORDS]
    lines += [f"r {hexes(drive_material(pw), x, serial)}" for pw, serial, _, x in exchanges]
    lines.append(f"r {hexes(drive_material(b'wrong'), wrong_x, b'SK-0001')}")
    lines += [f"r {hexes(pake.ENROL_MATERIAL, x, b'SK-0001')}" for _, x in BAD_X]
    lines.append(f"f {hexes(pake.ENROL_MATERIAL, reflected, b'SK-0001', raw)}")
    cases = tmp_path / "cases.txt"
    cases.write_text("\n".join(lines) + "\n")
    script = tmp_path / "check.py"
    script.write_text(MP_SCRIPT)
    proc = run_micropython([str(script), str(cases)], path=[REPO / "device", REPO], timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    answers = proc.stdout.splitlines()
    assert len(answers) == len(lines)
    it = iter(answers)
    assert next(it).split() == [drive_material(b"sealkeep enrol").hex(), pake.M.hex(), pake.N.hex()]
    for pw in PASSWORDS:
        assert next(it) == drive_material(pw).hex()
    for pw in PASSWORDS:
        assert int(next(it), 16) == Ed25519Group.password_to_scalar(pw)
    for pw, serial, side_a, _ in exchanges:
        y_hex, key_hex = next(it).split()
        assert side_a.finish(b"B" + bytes.fromhex(y_hex)).hex() == key_hex, (pw, serial)
    y_hex, key_hex = next(it).split()
    assert wrong.finish(b"B" + bytes.fromhex(y_hex)).hex() != key_hex
    for what, _ in BAD_X:
        assert next(it) == "ValueError", what
    assert next(it) == "ValueError", "reflection"


HEAP_SCRIPT = """
import gc, time
gc.collect()
start = gc.mem_free()
from fw import ed25519, pake
gc.collect()
free = gc.mem_free()
x = bytes.fromhex("{x}")
seed = bytes(range(32))
message = b"sealkeep drive identity" + bytes(33)

def session():
    y, key = pake.respond(pake.ENROL_MATERIAL, x, b"SK-0001")
    return y, key, ed25519.sign(seed, message)

def squeeze(left):
    # Fill the heap down to about `left` free bytes, its gaps too.
    pads = None
    for size in (2048, 512, 128, 32, 16):
        while gc.mem_free() > left + size:
            try:
                pads = (pads, bytearray(size))
            except MemoryError:
                break
    return pads

def least_free(task):
    for left in range(0, 65536, 128):
        gc.collect()
        pads = squeeze(left)
        gc.collect()
        have = gc.mem_free()
        try:
            task()
            ok = True
        except MemoryError:
            ok = False
        pads = None
        if ok:
            return have
    return -1

need = least_free(session) - least_free(lambda: None)
gc.collect()
t = time.ticks_us()
y, key, signature = session()
us = time.ticks_diff(time.ticks_us(), t)
print(y.hex(), key.hex(), signature.hex())
print(start - free, free, need, us)
"""


def test_unix_port_session_crypto_in_a_96k_heap(
    tmp_path: Path,
    mpy_cross: str,
    run_micropython: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """Precompiled, as on a drive: respond + sign in a 96 KiB heap, with what that needs
    printed (the figures themselves are the benchmark's)."""
    for package, module, source in (
        ("fw", "ed25519", REPO / "device" / "fw" / "ed25519.py"),
        ("fw", "pake", REPO / "device" / "fw" / "pake.py"),
        ("protocol", "hmac256", REPO / "protocol" / "hmac256.py"),
    ):
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
        out = tmp_path / package / f"{module}.mpy"
        subprocess.run([mpy_cross, "-O3", "-o", str(out), str(source)], check=True)
    side_a = SPAKE2_A(b"sealkeep enrol", idA=HOST_ID, idB=b"SK-0001")
    x_msg = side_a.start()[1:]
    script = tmp_path / "heap.py"
    script.write_text(HEAP_SCRIPT.replace("{x}", x_msg.hex()))
    proc = run_micropython([str(script)], heap="96K", path=[tmp_path], timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    first, second = proc.stdout.splitlines()
    y_hex, key_hex, signature_hex = first.split()
    assert side_a.finish(b"B" + bytes.fromhex(y_hex)).hex() == key_hex
    message = b"sealkeep drive identity" + bytes(33)
    assert signature_hex == ed25519.sign(bytes(range(32)), message).hex()
    code, free, need, us = (int(v) for v in second.split())
    print(
        f"96 KiB heap: the modules take {code} bytes, {free} free after import; respond + "
        f"sign need {need} bytes free, so the free heap's low-water mark is {free - need}; "
        f"{us / 1000:.1f} ms"
    )
    assert 0 < need < 16 * 1024
    assert code < 16 * 1024
