"""The protocol package on the MicroPython unix port behaves exactly as under CPython.

Thousands of cases (CBOR decoding of random, valid and damaged input; COBS; the frame
reader over random chunkings; frame parsing; HMAC; names; transcripts) are answered by
``protocol_checks_mp.answer`` on both interpreters, and every answer must match.
"""

import hashlib
import hmac
import importlib.util
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from cobs import cobs as reference_cobs
from sealkeep.protocol import cbor, errors, framing, hmac256, messages, serials, transcript

HERE = Path(__file__).resolve().parent
SEED = 0x5EA1


def load_checks() -> Any:
    spec = importlib.util.spec_from_file_location(
        "protocol_checks_mp", HERE / "protocol_checks_mp.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = load_checks()
MODS = checks.Mods(cbor, framing, messages, transcript, hmac256, errors, serials)


def h(data: bytes) -> str:
    return data.hex() or "-"


def rand_bytes(rng: random.Random, n: int, zeros: float = 0.2) -> bytes:
    return bytes(0 if rng.random() < zeros else rng.randrange(1, 256) for _ in range(n))


def rand_text(rng: random.Random) -> str:
    pools = ["abc", "äöü", "\u6c34\u00e9", "\U0001f511\U00010151", "\x00\x7f", "-._/\\"]
    pool = "".join(rng.sample(pools, 2))
    return "".join(rng.choice(pool) for _ in range(rng.randrange(0, 12)))


def rand_int(rng: random.Random) -> int:
    bits = rng.choice([3, 5, 8, 9, 16, 17, 32, 33, 63, 64])
    value = rng.getrandbits(bits)
    return value if rng.random() < 0.5 else -1 - value


def rand_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind in (1, 2):
        return rand_int(rng)
    if kind == 3:
        return rand_bytes(rng, rng.choice([0, 1, 23, 24, 255, 256, 300]))
    if kind in (4, 5):
        return rand_text(rng)
    if kind == 6:
        return [rand_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    keys = [rand_int(rng) if rng.random() < 0.5 else rand_text(rng) for _ in range(5)]
    return {k: rand_value(rng, depth + 1) for k in keys[: rng.randrange(0, 6)]}


def damage(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randrange(1, 3)):
        action = rng.randrange(3)
        if action == 0 and raw:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        elif action == 1:
            del raw[rng.randrange(len(raw) + 1) :]
        else:
            raw.insert(rng.randrange(len(raw) + 1), rng.randrange(256))
    return bytes(raw)


def cbor_cases(rng: random.Random) -> list[str]:
    cases = [f"dec {h(bytes.fromhex(x))}" for x in checks.CBOR_REFUSED]
    cases += [f"dec {x}" for x, _ in checks.CBOR_VECTORS]
    for _ in range(800):
        cases.append(f"dec {h(rng.randbytes(rng.randrange(0, 24)))}")
    for _ in range(500):
        valid = cbor2.dumps(rand_value(rng), canonical=True)
        cases.append(f"dec {h(valid)}")
        cases.append(f"dec {h(damage(rng, valid))}")
    for _ in range(600):  # text strings with arbitrary 1-4 byte contents: UTF-8 edges
        raw = bytes(
            rng.choice([0xC0, 0xC2, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0x80, 0xBF])
            if i == 0
            else rng.choice([0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0x41])
            for i in range(rng.randrange(1, 5))
        )
        cases.append(f"dec {h(bytes([0x60 + len(raw)]) + raw)}")
    return cases


def framing_cases(rng: random.Random) -> list[str]:
    cases = []
    for _ in range(200):
        n = rng.choice([0, 1, 2, 253, 254, 255, 256, 508, 509, rng.randrange(600)])
        cases.append(f"cobs {h(rand_bytes(rng, n, rng.choice([0, 0.01, 0.5])))}")
        cases.append(f"undo {h(rand_bytes(rng, rng.randrange(1, 40), 0))}")
        # a valid encoding with a zero put somewhere inside: both must refuse it
        enc = bytearray(framing.cobs_encode(rand_bytes(rng, rng.randrange(1, 300), 0.05)))
        enc[rng.randrange(len(enc))] = 0
        cases.append(f"undo {h(bytes(enc))}")
    for _ in range(150):
        max_frame = rng.choice([16, 64, 300])
        parts = []
        for _ in range(rng.randrange(1, 6)):
            kind = rng.randrange(4)
            if kind == 0:  # garbage
                parts.append(rand_bytes(rng, rng.randrange(1, 60), 0.1))
            elif kind == 1:  # oversize
                parts.append(framing.cobs_encode(rng.randbytes(max_frame + rng.randrange(1, 50))))
            else:
                parts.append(framing.cobs_encode(rng.randbytes(rng.randrange(0, max_frame + 1))))
        stream = b"\x00".join(parts) + b"\x00"
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(6))))
        cases.append(f"read {max_frame} {h(stream)} {','.join(map(str, cuts)) or '-'}")
    for _ in range(200):
        mac = rng.randbytes(16) if rng.random() < 0.5 else None
        body = rng.randbytes(rng.randrange(0, 40))
        frame = framing.cobs_decode(
            framing.build_frame(rng.randrange(256), rng.randrange(65536), body, mac)[:-1]
        )
        if rng.random() < 0.4:
            frame = damage(rng, frame)
        cases.append(f"parse {h(frame)}")
    return cases


def auth_cases(rng: random.Random) -> list[str]:
    cases = []
    for _ in range(100):
        key = rng.randbytes(rng.choice([0, 1, 32, 63, 64, 65, 200]))
        cases.append(f"hmac {h(key)} {h(rng.randbytes(rng.randrange(0, 300)))}")
    alphabet = "aZ09._-/\\\x00 ä\u2215\U0001f511"
    for _ in range(300):
        name = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 5, 64, 65])))
        cases.append(f"name {h(name.encode())}")
    cases.append(f"name {h(b'x' * 64)}")
    serial_alphabet = "aZ09-_. /\x00\u00e9"
    for _ in range(300):
        length = rng.choice([0, 1, 3, 4, 5, 16, 31, 32, 33, 40])
        serial = "".join(rng.choice(serial_alphabet) for _ in range(length))
        cases.append(f"serial {h(serial.encode())}")
    for serial in ("0004a3f1", "20231107", "SK-00A1", "-ABC", "A" * 32, "A" * 33, "ab-"):
        cases.append(f"serial {h(serial.encode())}")
    for _ in range(20):
        serial = rand_text(rng).encode()
        x, y, ident = (h(rng.randbytes(32)) for _ in range(3))
        cases.append(f"tr {h(serial)} {rng.randrange(3)} {x} {y} {ident}")
    return cases


def test_unix_port_answers_like_cpython(
    tmp_path: Path, run_micropython: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    rng = random.Random(SEED)
    cases = cbor_cases(rng) + framing_cases(rng) + auth_cases(rng)
    path = tmp_path / "cases.txt"
    path.write_text("\n".join(cases) + "\n")
    proc = run_micropython(["tests/unit/protocol_checks_mp.py", "--cases", str(path)])
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.splitlines()
    assert len(got) == len(cases), proc.stdout[-2000:] + proc.stderr
    want = [checks.answer(case, MODS) for case in cases]
    differ = [
        f"{case[:120]}\n  cpython:     {w[:120]}\n  micropython: {g[:120]}"
        for case, w, g in zip(cases, want, got, strict=True)
        if w != g
    ]
    assert not differ, f"{len(differ)} cases differ:\n" + "\n".join(differ[:10])
    crashed = [f"{c[:80]}: {w}" for c, w in zip(cases, want, strict=True) if w.startswith("EXC")]
    assert not crashed, "\n".join(crashed[:10])
    # the answers are right, not only equal: check the ones an outside oracle can judge
    for case, answer in zip(cases, want, strict=True):
        op, *args = case.split()
        if op == "hmac":
            key, msg = (bytes.fromhex(a) if a != "-" else b"" for a in args)
            assert answer == hmac.new(key, msg, hashlib.sha256).hexdigest()
        elif op == "undo":
            try:
                want_undo = h(reference_cobs.decode(bytes.fromhex(args[0])))
            except reference_cobs.DecodeError:
                want_undo = "err"
            assert answer == want_undo, case[:120]
        elif op == "serial":
            text = bytes.fromhex(args[0]).decode() if args[0] != "-" else ""
            plain = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{3,31}", text, re.ASCII)
            assert (answer == "ok") == bool(plain), (text, answer)
        elif op == "dec" and answer.startswith("ok"):
            data = bytes.fromhex(args[0]) if args[0] != "-" else b""
            assert cbor2.loads(data) == cbor.decode(data)


HEAP_SCRIPT = """
import gc
from protocol import cbor, errors, framing, transcript
gc.collect()
reader = framing.FrameReader(4096)
writer = framing.FrameWriter(4096)
rx = bytearray(256)
mac = transcript.SessionMac(b"k" * 32)
payload = bytes(framing.payload_room(4096))
for seq in range(20):
    frame = writer.begin(0x92, seq, framing.FLAG_MAC)
    cbor.encode_into({1: payload}, frame)
    wire = writer.finish(frame, mac.tag(frame))
    got = None
    for start in range(0, len(wire), len(rx)):
        n = min(len(rx), len(wire) - start)
        rx[:n] = wire[start : start + n]
        pos = 0
        while pos < n:
            pos, result = reader.push(rx, pos, n)
            if result is not None:
                got = result
    body = cbor.decode(framing.parse_frame(got)[3], True)
    assert len(body[1]) == 4056
    gc.collect()
print("fits", gc.mem_free())
"""


def test_precompiled_protocol_fits_a_64k_heap(
    tmp_path: Path,
    mpy_cross: str,
    run_micropython: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """Maximum-size MACed frames written and read back, the drive's way, in its 64 KiB heap.

    The modules are precompiled as on a board: compiling them from source inside a 64 KiB
    heap fragments it enough that the 4 KiB frame buffers no longer fit.
    """
    package = tmp_path / "protocol"
    package.mkdir()
    for source in sorted((HERE.parents[1] / "protocol").glob("*.py")):
        target = package / (source.stem + ".mpy")
        subprocess.run([mpy_cross, "-o", str(target), str(source)], check=True)
    script = tmp_path / "heap.py"
    script.write_text(HEAP_SCRIPT)
    proc = run_micropython([str(script)], heap="64K", path=[tmp_path])
    assert proc.returncode == 0 and proc.stdout.startswith("fits"), proc.stdout + proc.stderr
