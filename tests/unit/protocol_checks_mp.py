"""Checks of the protocol package as the drive runs it, on the MicroPython unix port.

    MICROPYPATH=REPO micropython tests/unit/protocol_checks_mp.py GOLDEN_DIR
        rebuilds every golden frame and compares it with GOLDEN_DIR/frames.txt, runs
        codec, framing, HMAC and transcript self-checks, prints each failure and then
        "ALL OK" or "FAILED n"; exit status 1 on failure.
    MICROPYPATH=REPO micropython tests/unit/protocol_checks_mp.py --cases FILE
        answers each line of FILE with one line (see answer()); CPython imports this
        module and answers the same lines with its own protocol package, so the two
        interpreters can be compared case by case.

Builtins only (plus the protocol package handed in), so the same code runs on both.
"""

import hashlib
import sys


class Mods:
    """The protocol modules one interpreter uses."""

    def __init__(self, cbor, framing, messages, transcript, hmac256, errors, serials=None):
        self.cbor = cbor
        self.framing = framing
        self.messages = messages
        self.transcript = transcript
        self.hmac256 = hmac256
        self.errors = errors
        self.serials = serials


def _unhex(field):
    return b"" if field == "-" else bytes.fromhex(field)


def _hex(data):
    return bytes(data).hex() or "-"


def _read_all(m, max_frame, stream, splits):
    """Feed stream to a FrameReader in the given chunks; describe what comes out."""
    reader = m.framing.FrameReader(max_frame)
    raw_len = len(reader.raw)
    out = []
    start = 0
    stops = list(splits)
    stops.append(len(stream))
    for stop in stops:
        chunk = stream[start:stop]
        start = stop
        pos = 0
        while pos < len(chunk):
            pos, result = reader.push(chunk, pos)
            if result is None:
                continue
            if result is m.framing.OVERSIZE:
                out.append("O")
            elif result is m.framing.MALFORMED:
                out.append("M")
            else:
                out.append(_hex(result))
            if len(reader.raw) != raw_len or reader.n > reader.max_encoded:
                out.append("GREW")
    return ",".join(out) or "-"


def answer(line, m):
    """One case line in, one answer line out.

    dec HEX                    decode; "ok" + canonical re-encoding, or "err"
    cobs HEX                   COBS encoding, then the decoding of that
    undo HEX                   cobs_decode, or "err"
    read MAX HEX SPLITS        FrameReader over HEX cut at SPLITS (comma list or -)
    parse HEX                  parse_frame fields, or "err CODE"
    hmac KEY MSG               HMAC-SHA256
    name HEX                   name_ok of the UTF-8 text HEX: 1 or 0
    serial HEX                 serial_problem of the UTF-8 text HEX: "ok" or the problem
    tr SERIAL ROLE X Y ID      transcript hash
    """
    f = line.split()
    op = f[0]
    try:
        if op == "dec":
            data = _unhex(f[1])
            try:
                obj = m.cbor.decode(data)
            except m.cbor.CBORError:
                return "err"
            viewed = m.cbor.decode(data, True)
            again = m.cbor.encode(obj)
            if m.cbor.encode(viewed) != again:
                return "views differ"
            return "ok " + _hex(again)
        if op == "cobs":
            enc = m.framing.cobs_encode(_unhex(f[1]))
            return _hex(enc) + " " + _hex(m.framing.cobs_decode(enc))
        if op == "undo":
            try:
                return _hex(m.framing.cobs_decode(_unhex(f[1])))
            except ValueError:
                return "err"
        if op == "read":
            splits = [] if f[3] == "-" else [int(s) for s in f[3].split(",")]
            return _read_all(m, int(f[1]), _unhex(f[2]), splits)
        if op == "parse":
            try:
                msg_id, flags, seq, body, mac, signed = m.framing.parse_frame(
                    memoryview(_unhex(f[1]))
                )
            except m.framing.FrameError as e:
                return "err " + str(e.code)
            mac_hex = "none" if mac is None else _hex(mac)
            return " ".join(
                ["ok", str(msg_id), str(flags), str(seq), _hex(body), mac_hex, _hex(signed)]
            )
        if op == "hmac":
            return _hex(m.hmac256.hmac_sha256(_unhex(f[1]), _unhex(f[2])))
        if op == "name":
            return "1" if m.messages.name_ok(str(_unhex(f[1]), "utf-8")) else "0"
        if op == "serial":
            problem = m.serials.serial_problem(str(_unhex(f[1]), "utf-8"))
            return "ok" if problem is None else problem
        if op == "tr":
            serial = str(_unhex(f[1]), "utf-8")
            args = (int(f[2]), serial, _unhex(f[3]), _unhex(f[4]), _unhex(f[5]))
            return _hex(m.transcript.transcript_hash(*args))
    except Exception as e:
        return "EXC " + type(e).__name__ + " " + str(e)
    return "unknown case " + op


# ---------------------------------------------------------------------------------------
# Self-checks: each returns a list of failure descriptions.

# RFC 8949 appendix A, the part this codec supports: (hex, value)
CBOR_VECTORS = [
    ("00", 0),
    ("01", 1),
    ("0a", 10),
    ("17", 23),
    ("1818", 24),
    ("1819", 25),
    ("1864", 100),
    ("1903e8", 1000),
    ("1a000f4240", 1000000),
    ("1b000000e8d4a51000", 1000000000000),
    ("1bffffffffffffffff", 18446744073709551615),
    ("3bffffffffffffffff", -18446744073709551616),
    ("20", -1),
    ("29", -10),
    ("3863", -100),
    ("3903e7", -1000),
    ("f4", False),
    ("f5", True),
    ("f6", None),
    ("40", b""),
    ("4401020304", b"\x01\x02\x03\x04"),
    ("60", ""),
    ("6161", "a"),
    ("6449455446", "IETF"),
    ("62225c", '"\\'),
    ("62c3bc", "\u00fc"),
    ("63e6b0b4", "\u6c34"),
    ("64f0908591", "\U00010151"),
    ("80", []),
    ("83010203", [1, 2, 3]),
    ("8301820203820405", [1, [2, 3], [4, 5]]),
    ("98190102030405060708090a0b0c0d0e0f101112131415161718181819", list(range(1, 26))),
    ("a0", {}),
    ("a201020304", {1: 2, 3: 4}),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}),
    ("826161a161626163", ["a", {"b": "c"}]),
    ("a56161614161626142616361436164614461656145", {c: c.upper() for c in "abcde"}),
]

# Well-formed or not, all refused by this codec.
CBOR_REFUSED = [
    "f93c00",  # half float
    "fa47c35000",  # single float
    "fb3ff199999999999a",  # double float
    "f0",  # simple value 16
    "f820",  # simple value 32
    "f7",  # undefined
    "ff",  # break outside indefinite item
    "c074323031332d30332d32315432303a30343a30305a",  # tag 0
    "c249010000000000000000",  # bignum tag
    "d82076687474703a2f2f7777772e6578616d706c652e636f6d",  # tag 32
    "5f42010243030405ff",  # indefinite byte string
    "7f657374726561646d696e67ff",  # indefinite text
    "9fff",  # indefinite array
    "bf61610161629f0203ffff",  # indefinite map
    "1c",  # reserved additional information
    "1f",
    "",  # nothing at all
    "18",  # truncated argument
    "1901",
    "1b00000000000000",
    "4201",  # truncated byte string
    "6261",
    "830102",  # truncated array
    "a101",  # truncated map
    "0000",  # trailing byte
    "a0f6",
    "5bffffffffffffffff00",  # byte string longer than anything
    "7affffffff",
    "9bffffffffffffffff",
    "bbffffffffffffffff",
    "61ff",  # invalid UTF-8
    "62c328",
    "62c080",  # overlong NUL
    "63eda080",  # surrogate
    "64f4908080",  # beyond U+10FFFF
    "a1f501",  # bool key
    "a1f601",  # null key
    "a1410101",  # byte string key
    "a1800101",  # array key
    "a2010201f4",  # duplicate key
    "81" * 9 + "00",  # nested too deeply
    "a101" * 9 + "00",
]

NOT_NESTED_TOO_DEEP = "81" * 8 + "00"


def check_cbor(m):
    bad = []
    for hexed, value in CBOR_VECTORS:
        raw = bytes.fromhex(hexed)
        if m.cbor.encode(value) != raw:
            bad.append("cbor encode " + hexed)
        try:
            back = m.cbor.decode(raw)
        except Exception as e:
            bad.append("cbor decode " + hexed + ": " + repr(e))
            continue
        if m.cbor.encode(back) != raw or back != value:
            bad.append("cbor round trip " + hexed)
    for hexed in CBOR_REFUSED:
        try:
            m.cbor.decode(bytes.fromhex(hexed))
            bad.append("cbor accepted " + hexed)
        except m.cbor.CBORError:
            pass
        except Exception as e:
            bad.append("cbor " + hexed + " raised " + repr(e))
    try:
        m.cbor.decode(bytes.fromhex(NOT_NESTED_TOO_DEEP))
    except Exception as e:
        bad.append("cbor depth 8 refused: " + repr(e))
    for value in (1 << 64, -(1 << 64) - 1, 1.5, object()):
        try:
            m.cbor.encode(value)
            bad.append("cbor encoded " + repr(value))
        except m.cbor.CBORError:
            pass
    view = m.cbor.decode(b"\x42ab", True)
    if not isinstance(view, memoryview) or bytes(view) != b"ab":
        bad.append("cbor views")
    out = bytearray(b"\x99")
    m.cbor.encode_into({2: b"x", 1: [True, None]}, out)
    if bytes(out) != bytes.fromhex("99a20182f5f6024178"):
        bad.append("cbor encode_into " + bytes(out).hex())
    return bad


COBS_VECTORS = [
    ("", "01"),
    ("00", "0101"),
    ("0000", "010101"),
    ("001100", "01021101"),
    ("11220033", "0311220233"),
    ("11223344", "0511223344"),
    ("11000000", "0211010101"),
]


def check_framing(m):
    fr = m.framing
    bad = []
    vectors = list(COBS_VECTORS)
    run = bytes(range(1, 255))
    vectors.append((run.hex(), "ff" + run.hex()))
    vectors.append(("00" + run.hex(), "01ff" + run.hex()))
    vectors.append((run.hex() + "ff", "ff" + run.hex() + "02ff"))
    for plain, enc in vectors:
        if fr.cobs_encode(bytes.fromhex(plain)).hex() != enc:
            bad.append("cobs encode " + plain[:16])
        if fr.cobs_decode(bytes.fromhex(enc)).hex() != plain:
            bad.append("cobs decode " + enc[:16])
    for broken in ("05112233", "00", "0300", "030100", "0201000201"):
        try:
            fr.cobs_decode(bytes.fromhex(broken))
            bad.append("cobs accepted " + broken)
        except ValueError:
            pass

    # A stream of frames cut into every chunk size from 1 to 9 bytes.
    frames = [fr.build_frame(i + 1, i, bytes([i]) * (i * 37)) for i in range(6)]
    stream = b"\x00".join(frames)
    want = ",".join(_hex(fr.cobs_decode(f[:-1])) for f in frames)
    for size in range(1, 10):
        if _read_all(m, 512, stream, list(range(size, len(stream), size))) != want:
            bad.append("reader chunk size " + str(size))

    # Garbage, then an oversize frame, then a good frame.
    good = fr.build_frame(1, 7, b"\xa0")
    stream = b"\x13\x37garbage\x00" + bytes([0x55]) * 3000 + b"\x00" + good
    got = _read_all(m, 256, stream, [5, 100, 2000])
    if got != "M,O," + _hex(fr.cobs_decode(good[:-1])):
        bad.append("reader resync/oversize: " + got[:40])

    # parse_frame
    wire = fr.build_frame(0x13, 0x1234, b"\xa1\x01\x02", b"M" * 16)
    msg_id, flags, seq, body, mac, signed = fr.parse_frame(memoryview(fr.cobs_decode(wire[:-1])))
    if (msg_id, flags, seq, bytes(body), bytes(mac)) != (
        0x13,
        1,
        0x1234,
        b"\xa1\x01\x02",
        b"M" * 16,
    ):
        bad.append("parse_frame fields")
    if bytes(signed) != b"\x01\x13\x01\x12\x34\xa1\x01\x02":
        bad.append("parse_frame signed")
    plain = bytearray(fr.cobs_decode(fr.build_frame(1, 1, b"\xa0")[:-1]))
    cases = [(plain[:8], m.errors.MALFORMED_FRAME)]
    flipped = bytearray(plain)
    flipped[5] ^= 0x40
    cases.append((flipped, m.errors.CRC))
    for raw, code in cases:
        try:
            fr.parse_frame(memoryview(raw))
            bad.append("parse_frame accepted " + bytes(raw).hex())
        except fr.FrameError as e:
            if e.code != code:
                bad.append("parse_frame code " + str(e.code))
    writer = fr.FrameWriter(64)
    frame = writer.begin(0x92, 1)
    frame.extend(b"x" * 60)
    try:
        writer.finish(frame)
        bad.append("FrameWriter sent an oversize frame")
    except fr.FrameError as e:
        if e.code != m.errors.FRAME_TOO_LARGE:
            bad.append("FrameWriter code")
    return bad


# RFC 4231 test cases 1-4, 6, 7: (key, data, HMAC-SHA256)
RFC4231 = [
    (
        "0b" * 20,
        b"Hi There".hex(),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        b"Jefe".hex(),
        b"what do ya want for nothing?".hex(),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    ("aa" * 20, "dd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (
        "0102030405060708090a0b0c0d0e0f10111213141516171819",
        "cd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (
        "aa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        "aa" * 131,
        (
            b"This is a test using a larger than block-size key and a larger than "
            b"block-size data. The key needs to be hashed before being used by the "
            b"HMAC algorithm."
        ).hex(),
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


def check_hmac(m):
    bad = []
    for key, data, mac in RFC4231:
        k = bytes.fromhex(key)
        d = bytes.fromhex(data)
        if m.hmac256.hmac_sha256(k, d).hex() != mac:
            bad.append("hmac " + key[:8])
        if m.hmac256.HMAC256(k).mac(d[:3], memoryview(d)[3:]).hex() != mac:
            bad.append("hmac parts " + key[:8])
    # RFC 4231 test case 5: output truncated to 128 bits
    t5 = m.hmac256.hmac_sha256(b"\x0c" * 20, b"Test With Truncation")[:16]
    if t5.hex() != "a3b6167473100ee06e0c796c2955552b":
        bad.append("hmac truncated")
    if not m.hmac256.equal(b"abc", memoryview(b"abc")) or m.hmac256.equal(b"abc", b"abd"):
        bad.append("hmac equal")
    if m.hmac256.equal(b"abc", b"ab"):
        bad.append("hmac equal length")
    return bad


def check_transcript(m):
    t = m.transcript
    bad = []
    tr = t.transcript_hash(1, "SK1", b"x" * 32, b"y" * 32, b"i" * 32)
    raw = b"sealkeep auth 2\x00\x01\x03SK1" + b"x" * 32 + b"y" * 32 + b"i" * 32
    if tr != hashlib.sha256(raw).digest():
        bad.append("transcript layout")
    if t.mask(b"\x0f" * 32, b"\xff" * 32) != b"\xf0" * 32:
        bad.append("mask")
    if t.derive(b"k" * 32, b"lbl", tr) != m.hmac256.hmac_sha256(b"k" * 32, b"lbl\x00" + tr):
        bad.append("derive")
    key = b"K" * 32
    sm = t.SessionMac(key)
    first = sm.peek(b"abc")
    if sm.counter != 0 or sm.tag(b"abc") != first or sm.counter != 1:
        bad.append("SessionMac counter")
    want = m.hmac256.hmac_sha256(key, bytes(7) + b"\x01" + b"abc")[:16]
    if sm.tag(b"abc") != want or sm.counter != 2:
        bad.append("SessionMac tag")
    return bad


def check_messages(m):
    bad = []
    ok = ["a", "A-Z_0.9", "bdk-2024.sk", "a..b", "x" * 64]
    refused = [
        "",
        ".",
        "..",
        ".hidden",
        "../x",
        "a/b",
        "a\\b",
        "a\x00b",
        "x" * 65,
        "b\u00e4r",
        "a b",
    ]
    for name in ok:
        if not m.messages.name_ok(name):
            bad.append("name refused: " + name)
    for name in refused:
        if m.messages.name_ok(name):
            bad.append("name accepted: " + repr(name))
    schema = m.messages.REQUESTS[m.messages.READ]
    if m.messages.check(schema, {1: "n", 2: 0, 3: 5}) is not None:
        bad.append("check good READ")
    if m.messages.check(schema, {1: "n", 2: 0}) is None:
        bad.append("check missing field")
    if m.messages.check(schema, {1: "n", 2: True, 3: 5}) is None:
        bad.append("check bool as unsigned")
    if m.messages.check(schema, [1]) is None:
        bad.append("check non-map")
    return bad


def check_goldens(m, examples, golden_path):
    bad = []
    golden = examples.read_golden(golden_path)
    built = examples.build(m.messages, m.cbor, m.framing, m.transcript)
    if [label for label, _ in golden] != [label for label, _ in built]:
        return ["golden labels differ"]
    for i in range(len(golden)):
        label, want = golden[i]
        if want != built[i][1]:
            bad.append("golden " + label + " differs")
    names = [label for label, _ in golden]
    for name in m.messages.NAMES.values():
        if name not in names:
            bad.append("no golden frame for " + name)
    # Every golden frame reads back to its example body and fits its schema.
    _, k_h2d, k_d2h = examples.session_keys(m.transcript)
    bodies = examples.bodies(m.transcript, m.framing)
    reader = m.framing.FrameReader(examples.MAX_FRAME)
    if len(bodies) != len(golden):
        bad.append("golden count")
        return bad
    for i in range(len(golden)):
        label, wire = golden[i]
        try:
            problem = _golden_reads_back(m, reader, wire, bodies[i], k_h2d, k_d2h)
        except Exception as e:
            problem = type(e).__name__ + " " + str(e)
        if problem is not None:
            bad.append("golden " + label + ": " + problem)
    return bad


def _golden_reads_back(m, reader, wire, example, k_h2d, k_d2h):
    """None when wire reads back to the example body and fits its schema."""
    _, name, seq, direction, counter, body = example
    pos, frame = reader.push(wire)
    if pos != len(wire) or frame is None or isinstance(frame, int):
        reader.reset()
        return "does not read back"
    msg_id, _, got_seq, got_body, mac, signed = m.framing.parse_frame(frame)
    if msg_id != getattr(m.messages, name) or got_seq != seq:
        return "header"
    decoded = m.cbor.decode(got_body)
    if m.cbor.encode(decoded) != m.cbor.encode(body):
        return "body"
    schemas = m.messages.REQUESTS if msg_id < 0x80 else m.messages.REPLIES
    problem = m.messages.check(schemas[msg_id], decoded)
    if problem is not None:
        return problem
    if (mac is None) != (direction is None):
        return "MAC flag"
    if mac is not None:
        sm = m.transcript.SessionMac(k_h2d if direction == "h2d" else k_d2h)
        sm.counter = counter
        if not m.hmac256.equal(sm.peek(signed), mac):
            return "MAC"
    return None


def self_checks(m, examples, golden_path):
    bad = []
    checks = [
        ("cbor", lambda: check_cbor(m)),
        ("framing", lambda: check_framing(m)),
        ("hmac", lambda: check_hmac(m)),
        ("transcript", lambda: check_transcript(m)),
        ("messages", lambda: check_messages(m)),
        ("goldens", lambda: check_goldens(m, examples, golden_path)),
    ]
    for name, run in checks:
        try:
            bad.extend(run())
        except Exception as e:
            bad.append(name + " checks raised " + type(e).__name__ + " " + str(e))
    return bad


def _device_mods():
    from protocol import cbor, errors, framing, hmac256, messages, serials, transcript

    return Mods(cbor, framing, messages, transcript, hmac256, errors, serials)


def main(argv):
    m = _device_mods()
    if len(argv) == 3 and argv[1] == "--cases":
        with open(argv[2]) as f:
            for line in f:
                line = line.strip()
                if line:
                    print(answer(line, m))
        return 0
    if len(argv) != 2:
        print("usage: protocol_checks_mp.py GOLDEN_DIR | --cases FILE")
        return 2
    golden_dir = argv[1]
    sys.path.append(golden_dir)
    import examples

    bad = self_checks(m, examples, golden_dir + "/frames.txt")
    for line in bad:
        print("FAIL " + line)
    if bad:
        print("FAILED " + str(len(bad)))
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
